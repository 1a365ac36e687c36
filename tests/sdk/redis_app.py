"""A protected ASGI app sharing a Redis nonce store: run as a separate server process.

``python -m tests.sdk.redis_app HOME KEY_HEX REDIS_URL`` serves on a free port and
prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.redis_nonce import AsyncRedisNonceStore
from authmesh.store import AllowListStore, AmeshHome


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def main(home: str, key_hex: str, redis_url: str) -> None:
    store = AllowListStore(AmeshHome.from_env({"AUTH_MESH_DIR": home}), bytes.fromhex(key_hex))
    verifier = Verifier(store, nonce_store=AsyncRedisNonceStore(redis_url))
    app = AuthMeshMiddleware(ok, verifier=verifier)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
