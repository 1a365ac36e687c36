"""aiohttp: server CPU per verified request beside the same app's unguarded route.

    .venv/bin/python bench/sdk_aiohttp.py [--seconds 4] [--rounds 3] [--concurrency 32]

One aiohttp server process (127.0.0.1, port chosen by the OS; asyncio and uvloop event
loops in turn) serves two identical POST routes with a JSON body: ``/guarded`` behind
``AuthMeshAiohttpMiddleware`` and ``/open`` exempted from it, so the difference is what
authmesh adds. Load comes from this process (uvloop when installed): keep-alive connections sending
pre-built requests, each signed beforehand with its own nonce (the unguarded route gets the same
bytes). Only 200 answers count; a replay or any refusal is a failure. Before that, in
process and in the same run: one P-256 verification, ``Verifier.verify``, and the handler
called directly and through the middleware with requests built by aiohttp's test utilities.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from authmesh.core._canonical import body_sha256
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.aiohttp import AuthMeshAiohttpMiddleware
from authmesh.store import AllowListStore
from route_cpu import (
    Run,
    compare_routes,
    parse_arguments,
    print_floor,
    print_phases,
    run_servers,
    server_process,
)

_T = TypeVar("_T")
BODY = b'{"item": "widget", "amount": 100, "currency": "EUR"}'
SERVER = """
import asyncio, sys
from aiohttp import web
from authmesh.sdk.aiohttp import AuthMeshAiohttpMiddleware
from authmesh.sdk._verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

home, loop = sys.argv[1], sys.argv[2]
store = AllowListStore(AmeshHome.from_env({"AUTH_MESH_DIR": home}), bytes(32))

async def order(request):
    return web.json_response({"accepted": await request.json()})

async def main():
    middleware = AuthMeshAiohttpMiddleware(Verifier(store), exempt_paths={"/open"})
    app = web.Application(middlewares=[middleware])
    app.router.add_post("/guarded", order)
    app.router.add_post("/open", order)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

if loop == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


class _Protocol:
    """What aiohttp's StreamReader asks of a connection, for requests built in process."""

    _reading_paused = False

    def pause_reading(self, **_: object) -> None:
        return None

    def resume_reading(self, **_: object) -> None:
        return None


async def _order(request: web.Request) -> web.Response:
    return web.json_response({"accepted": await request.json()})


async def _in_process(store: AllowListStore, key: PrivateKey, count: int) -> tuple[float, float]:
    """CPU per request of the handler alone and behind the middleware, no sockets."""
    now = time.time()  # one clock for both: building the requests may take a while
    signer = RequestSigner(key, clock=lambda: now)
    verifier = Verifier(store, nonce_store=InMemoryNonceStore(), clock=lambda: now)
    middleware = AuthMeshAiohttpMiddleware(verifier)
    loop = asyncio.get_running_loop()
    figures = []
    for guarded in (False, True):
        requests = []
        for _ in range(count):
            payload = StreamReader(_Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
            payload.feed_data(BODY)
            payload.feed_eof()
            headers = {
                "Host": "127.0.0.1",
                "Content-Type": "application/json",
                "Content-Length": str(len(BODY)),
                "Authorization": signer.authorization("POST", "/guarded", body_sha256(BODY)),
            }
            requests.append(make_mocked_request("POST", "/guarded", headers, payload=payload))
        started = time.process_time()
        for request in requests:
            response = await (middleware(request, _order) if guarded else _order(request))
            assert response.status == 200
        figures.append((time.process_time() - started) / count * 1e6)
    return figures[0], figures[1]


def print_in_process(store: AllowListStore, key: PrivateKey, count: int = 2000) -> None:
    print_floor(store, key, count)
    bare, guarded = min(asyncio.run(_in_process(store, key, count)) for _ in range(3))
    print(
        f"in process: handler {bare:.1f} us, behind AuthMeshAiohttpMiddleware {guarded:.1f} us, "
        f"added {guarded - bare:.1f} us"
    )


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run the load on uvloop where available: the cheaper generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def requests_for(path: str, headers: list[str]) -> list[bytes]:
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\nAuthorization: {header}\r\n\r\n"
        ).encode()
        + BODY
        for header in headers
    ]


async def load(
    port: int, requests: list[bytes], seconds: float, connections: int
) -> tuple[int, int]:
    """(200 answers, other answers) over keep-alive connections for ``seconds``."""
    deadline = time.monotonic() + seconds
    pending = iter(requests)
    ok = failed = 0

    async def connection() -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline and (request := next(pending, None)):
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await asyncio.wait_for(reader.readexactly(length), 10)
                if head.startswith(b"HTTP/1.1 200"):
                    ok += 1
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return ok, failed


def measure(loop: str, home: str, signer: RequestSigner, args: argparse.Namespace) -> None:
    """Both routes of one server process running on ``loop``."""
    digest = body_sha256(BODY)
    with server_process(SERVER, home, loop) as (pid, port):

        def prepare(path: str, count: int) -> Run:
            # Every request gets a fresh nonce; the exempt route ignores them.
            headers = [signer.authorization("POST", "/guarded", digest) for _ in range(count)]
            requests = requests_for(path, headers)
            if path == "/open":
                requests *= round(args.seconds * args.rate * 4 / count) + 1
            return lambda: run_loop(load(port, requests, args.seconds, args.concurrency))

        results = compare_routes(pid, prepare, ("/open", "/guarded"), args)
    title = f"aiohttp server, {loop} loop, {args.concurrency} connections"
    print_phases(title, results)


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], rate=8000)
    key = PrivateKey.generate()
    signer = RequestSigner(key)
    signer.clock_offset = 8  # dated a little ahead: no request drifts past the warning mark
    run_servers(
        key,
        print_in_process,
        ("asyncio", "uvloop"),
        lambda kind, home: measure(kind, home, signer, args),
    )


if __name__ == "__main__":
    main()
