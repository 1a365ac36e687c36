"""Verified requests per second through uvicorn (1 worker), with and without AuthMesh.

    .venv/bin/python bench/sdk_verify.py [--seconds 5] [--connections 32] [--rounds 3]

Starts uvicorn in a child process (one worker, 127.0.0.1, port chosen by the OS)
serving a trivial ASGI app, once bare and once behind ``AuthMeshMiddleware`` with an
in-memory nonce store and a one-device allow list. A load generator in this process
sends pre-signed GET requests (each with its own nonce) over keep-alive connections
for a fixed time and counts 200 answers. Also measures, in-process and without
HTTP, the CPU time of ``Verifier.verify`` per request. Everything stays on loopback
and every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.canonical import EMPTY_BODY_SHA256
from authmesh.core.keys import PrivateKey
from authmesh.core.nonce import InMemoryNonceStore
from authmesh.sdk.signing import RequestSigner
from authmesh.sdk.verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

HMAC_KEY = bytes(32)
SERVER = """
import asyncio, sys
import uvicorn
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

async def ok(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

home, protected = sys.argv[1], sys.argv[2] == "1"
app = ok
if protected:
    store = AllowListStore(AmeshHome.from_env({"AUTH_MESH_DIR": home}), bytes(32))
    app = AuthMeshMiddleware(ok, verifier=Verifier(store))

async def main():
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task

asyncio.run(main())
"""


def make_home(directory: Path, key: PrivateKey) -> AllowListStore:
    now = "2026-01-01T00:00:00.000Z"
    device = Device.new(
        device_id=key.device_id,
        public_key=key.public_key_b64,
        friendly_name="bench",
        role="controller",
        added_at=now,
    )
    allow_list = AllowList.empty(now).with_device(device, now)
    (directory / "allow_list.json").write_text(allow_list.render(HMAC_KEY), encoding="utf-8")
    return AllowListStore(AmeshHome(directory), HMAC_KEY)


def presign(key: PrivateKey, count: int) -> list[bytes]:
    signer = RequestSigner(key)
    # Date the batch a little ahead so no request of the run drifts past the warning mark.
    signer.clock_offset = 8
    requests = []
    for _ in range(count):
        header = signer.authorization("GET", "/bench", EMPTY_BODY_SHA256)
        requests.append(
            f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {header}\r\n\r\n".encode()
        )
    return requests


async def load(port: int, requests: list[bytes], seconds: float, connections: int) -> int:
    deadline = time.monotonic() + seconds
    queue = iter(requests)
    done = 0

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                request = next(queue, None)
                if request is None:
                    return
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await asyncio.wait_for(reader.readexactly(length), 10)
                if head.startswith(b"HTTP/1.1 200"):
                    done += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done


def serve(home: Path, protected: bool) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(home), "1" if protected else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def throughput(home: Path, key: PrivateKey, protected: bool, args: argparse.Namespace) -> float:
    process, port = serve(home, protected)
    try:
        asyncio.run(load(port, presign(key, 2000), 1.0, args.connections))  # warm-up
        budget = int(args.seconds * 8000)
        requests = presign(key, budget)
        started = time.monotonic()
        done = asyncio.run(load(port, requests, args.seconds, args.connections))
        return done / (time.monotonic() - started)
    finally:
        process.terminate()
        process.wait(10)


def verify_cpu_microseconds(store: AllowListStore, key: PrivateKey, count: int = 5000) -> float:
    verifier = Verifier(store, nonce_store=InMemoryNonceStore())
    signer = RequestSigner(key)
    headers = [signer.authorization("GET", "/bench", EMPTY_BODY_SHA256) for _ in range(count)]
    started = time.process_time()
    for header in headers:
        verifier.verify("GET", "/bench", header, "127.0.0.1", b"")
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    key = PrivateKey.generate()
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        store = make_home(home, key)
        print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, uvicorn h11, 1 worker")
        cpu = verify_cpu_microseconds(store, key)
        print(f"Verifier.verify CPU per request (no HTTP): {cpu:.1f} us")
        bare_runs, verified_runs = [], []
        for _ in range(args.rounds):  # alternate, then take medians: the box is shared
            bare_runs.append(throughput(home, key, False, args))
            verified_runs.append(throughput(home, key, True, args))
        bare, verified = statistics.median(bare_runs), statistics.median(verified_runs)
        print(f"bare app:                 {bare:8.0f} req/s   runs {[round(r) for r in bare_runs]}")
        print(
            f"with AuthMeshMiddleware:  {verified:8.0f} verified req/s   "
            f"runs {[round(r) for r in verified_runs]}"
        )
        added = (1 / verified - 1 / bare) * 1e6
        print(f"added server time per verified request: {added:.0f} us")


if __name__ == "__main__":
    main()
