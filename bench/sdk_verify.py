"""Verified requests per second through uvicorn (1 worker), with and without AuthMesh.

    .venv/bin/python bench/sdk_verify.py [--seconds 5] [--connections 32] [--rounds 3]

Starts uvicorn in a child process (one worker, 127.0.0.1, port chosen by the OS)
serving a trivial ASGI app, once bare and once behind ``AuthMeshMiddleware`` with an
in-memory nonce store and a one-device allow list, for each server configuration
available: h11 + asyncio always, httptools + uvloop when both are installed (dev
extra).

Load: pre-signed GET requests, each with its own nonce, over keep-alive connections
for a fixed time; only 200 answers count. With ``wrk`` on the PATH (one thread, so
it and the server each get a core) a Lua script hands every wrk connection the next
unused header of a pool written to a file, split between threads; the pool is sized
above what a verified run can send, and should it run out the wrap-around replays
are refused by the server and show up as non-200, never as verified. Without wrk a
Python asyncio client does the same (it costs more CPU per request than wrk).
The bare app gets the same requests, so both runs move the same bytes.
Also measures, in-process and without HTTP, the CPU time of ``Verifier.verify``
per request (``bench/sdk_cpu.py`` splits that into ECDSA and the rest).
Everything stays on loopback and every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

HMAC_KEY = bytes(32)
SERVER = """
import asyncio, sys
import uvicorn
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk._verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

async def ok(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

home, protected, http, loop = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
app = ok
if protected:
    store = AllowListStore(AmeshHome.from_env({"AUTH_MESH_DIR": home}), bytes(32))
    app = AuthMeshMiddleware(ok, verifier=Verifier(store))

async def main():
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                            lifespan="off", access_log=False, http=http, loop=loop)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task

if loop == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""

# wrk prints this line at the end: 200 answers and failures counted by the script.
WRK_RESULT = """
function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""

# Each wrk thread takes every n-th header of the pool file; every request uses the next.
WRK_SCRIPT = (
    """
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  local count = tonumber(args[2])
  pool = {}
  local line_number = 0
  for line in io.lines(args[1]) do
    if line_number % count == id then pool[#pool + 1] = line end
    line_number = line_number + 1
  end
  position = 0
end
function request()
  position = position % #pool + 1
  return "GET /bench HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAuthorization: "
    .. pool[position] .. "\\r\\n\\r\\n"
end
"""
    + WRK_RESULT
)


@dataclass(frozen=True)
class ServerConfig:
    http: str
    loop: str

    @property
    def label(self) -> str:
        return f"uvicorn --http {self.http} --loop {self.loop}"


def server_configs() -> list[ServerConfig]:
    """h11 + asyncio always; httptools + uvloop too when both are importable."""
    configs = [ServerConfig("h11", "asyncio")]
    if all(importlib.util.find_spec(name) for name in ("httptools", "uvloop")):
        configs.append(ServerConfig("httptools", "uvloop"))
    return configs


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


def presign_headers(key: PrivateKey, count: int) -> list[str]:
    signer = RequestSigner(key)
    # Date the batch a little ahead so no request of the run drifts past the warning mark.
    signer.clock_offset = 8
    return [signer.authorization("GET", "/bench", EMPTY_BODY_SHA256) for _ in range(count)]


def presign(key: PrivateKey, count: int) -> list[bytes]:
    return [
        f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {header}\r\n\r\n".encode()
        for header in presign_headers(key, count)
    ]


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


def serve(home: Path, protected: bool, config: ServerConfig) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            str(home),
            "1" if protected else "0",
            config.http,
            config.loop,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def wrk_load(
    port: int, pool: Path, threads: int, seconds: float, connections: int
) -> tuple[float, int]:
    """(200 answers per second, non-200 answers and socket errors) of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        command = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", script.name, f"http://127.0.0.1:{port}/bench",
            "--", str(pool), str(threads),
        ]  # fmt: skip
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    requests, duration_us, non_200, errors = wrk_result(output)
    return (requests - non_200) / (duration_us / 1e6), non_200 + errors


def wrk_result(output: str) -> tuple[int, int, int, int]:
    """(requests, duration in µs, non-200 answers, socket errors) from ``WRK_RESULT``."""
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+)", output)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{output}")
    requests, duration_us, non_200, errors = (int(group) for group in found.groups())
    return requests, duration_us, non_200, errors


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU the server process has used so far (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    rate: float
    """200 answers per second."""
    failures: int
    """Non-200 answers and socket errors."""
    cpu_us: float | None
    """Server CPU per 200 answer: unlike the rate, hardly moved by other load on the box."""


def throughput(
    home: Path,
    key: PrivateKey,
    protected: bool,
    config: ServerConfig,
    args: argparse.Namespace,
) -> Run:
    process, port = serve(home, protected, config)
    try:
        asyncio.run(load(port, presign(key, 2000), 1.0, args.connections))  # warm-up
        if args.wrk is None:
            budget = int(args.seconds * 8000)
            requests = presign(key, budget)
            cpu_before = server_cpu_seconds(process.pid)
            started = time.monotonic()
            done = asyncio.run(load(port, requests, args.seconds, args.connections))
            rate, failures = done / (time.monotonic() - started), 0
        else:
            pool = home / "pool.txt"
            # wrk -d takes whole seconds. 12k verified/s is well above what one worker
            # reaches here (the bare app, which ignores the header, may wrap around).
            pool_size = int(max(1, round(args.seconds)) * 12_000)
            pool.write_text("\n".join(presign_headers(key, pool_size)) + "\n", encoding="ascii")
            cpu_before = server_cpu_seconds(process.pid)
            rate, failures = wrk_load(port, pool, 1, args.seconds, args.connections)
            done = round(rate * max(1, round(args.seconds)))
        cpu_after = server_cpu_seconds(process.pid)
        cpu_us = None
        if cpu_before is not None and cpu_after is not None and done:
            cpu_us = (cpu_after - cpu_before) / done * 1e6
        return Run(rate, failures, cpu_us)
    finally:
        process.terminate()
        process.wait(10)


def median_cpu(runs: list[Run]) -> float | None:
    values = [run.cpu_us for run in runs if run.cpu_us is not None]
    return statistics.median(values) if values else None


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
    parser.add_argument(
        "--python-client", action="store_true", help="use the asyncio client even if wrk exists"
    )
    args = parser.parse_args()
    args.wrk = None if args.python_client else shutil.which("wrk")
    key = PrivateKey.generate()
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        store = make_home(home, key)
        client = "wrk -t1 (pre-signed pool)" if args.wrk else "python asyncio client"
        print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, 1 worker, load: {client}")
        cpu = verify_cpu_microseconds(store, key)
        print(f"Verifier.verify CPU per request (no HTTP): {cpu:.1f} us")
        for config in server_configs():
            bare_runs: list[Run] = []
            verified_runs: list[Run] = []
            for _ in range(args.rounds):  # alternate, then take medians: the box is shared
                bare_runs.append(throughput(home, key, False, config, args))
                verified_runs.append(throughput(home, key, True, config, args))
            bare = statistics.median(run.rate for run in bare_runs)
            verified = statistics.median(run.rate for run in verified_runs)
            failures = sum(run.failures for run in verified_runs)
            print(config.label)
            print(
                f"  bare app:                {bare:8.0f} req/s   "
                f"runs {[round(run.rate) for run in bare_runs]}"
            )
            print(
                f"  with AuthMeshMiddleware: {verified:8.0f} verified req/s   "
                f"runs {[round(run.rate) for run in verified_runs]}   non-200/errors {failures}"
            )
            print(
                f"  added wall time per verified request: {(1 / verified - 1 / bare) * 1e6:.0f} us"
            )
            bare_cpu, verified_cpu = median_cpu(bare_runs), median_cpu(verified_runs)
            if bare_cpu is not None and verified_cpu is not None:
                print(
                    f"  server CPU per request: bare {bare_cpu:.0f} us, verified "
                    f"{verified_cpu:.0f} us, added {verified_cpu - bare_cpu:.0f} us"
                )


if __name__ == "__main__":
    main()
