"""Server CPU that authmesh adds per verified request, for every adapter, before and after.

    .venv/bin/python bench/sdk_adapters.py [--seconds 4] [--rounds 3] [--connections 32]
        [--before /tmp/main/src] [--adapters fastapi starlette asgi flask django]

For each adapter one server process serves ``bench/sdk_adapter_apps.py``: two identical
JSON POST routes, ``/guarded`` (verified) and ``/open`` (exempt). ASGI apps run under
uvicorn with httptools + uvloop (``uvicorn[standard]``), WSGI apps under gunicorn with
one sync worker. ``wrk -t1`` sends pre-signed requests from a pool, each with its own
nonce (a Lua script hands out the next header per request); the pool is larger than a
run can use, so a wrap-around replay would be refused and counted, never verified.
The server's CPU (user + system of the process and its children, from ``/proc``) over
each run, divided by the 200 answers, is the figure to trust on a shared machine; the
difference between the routes is what authmesh adds. wrk's own CPU is reported too.

``--before`` names the ``src`` directory of another checkout (e.g. ``git worktree add
/tmp/main main``): every adapter is then also measured with that code, in the same
run, alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from authmesh.core._canonical import body_sha256
from authmesh.core._keys import PrivateKey
from authmesh.sdk._signing import RequestSigner
from sdk_verify import WRK_RESULT, make_home, wrk_result

BENCH = Path(__file__).resolve().parent
BODY = json.dumps({"item": "Standing Desk", "amount": 59900}).encode()
ADAPTERS = {
    "fastapi": ("asgi", "fastapi_app"),
    "starlette": ("asgi", "starlette_app"),
    "asgi": ("asgi", "asgi_app"),
    "flask": ("wsgi", "flask_app"),
    "django": ("wsgi", "django_app"),
}
WRK_SCRIPT = """
function init(args)
  pool = {}
  for line in io.lines(args[1]) do pool[#pool + 1] = line end
  path, body, position = args[2], args[3], 0
end
function request()
  position = position % #pool + 1
  return "POST " .. path .. " HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
    .. "Content-Type: application/json\\r\\nContent-Length: " .. #body .. "\\r\\n"
    .. "Authorization: " .. pool[position] .. "\\r\\n\\r\\n" .. body
end
"""


@dataclass(frozen=True)
class Run:
    rate: float
    """200 answers per second."""
    failures: int
    """Non-200 answers and socket errors."""
    server_us: float
    """Server CPU per 200 answer."""
    wrk_us: float
    """Load generator CPU per request."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its direct children (gunicorn's worker)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name_end = (text := stat.read_text()).rindex(")")
        except (OSError, ValueError):
            continue
        fields = text[name_end + 2 :].split()
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start listening within 30 s")


@contextmanager
def serve(adapter: str, home: Path, src: Path | None) -> Iterator[tuple[int, int]]:
    """Start the adapter's server; yield (port, pid)."""
    kind, app = ADAPTERS[adapter]
    port = free_port()
    if kind == "asgi":
        command = [
            sys.executable, "-m", "uvicorn", f"sdk_adapter_apps:{app}", "--app-dir", str(BENCH),
            "--host", "127.0.0.1", "--port", str(port), "--http", "httptools", "--loop",
            "uvloop", "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    else:
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        command = [
            gunicorn, "--chdir", str(BENCH), "-w", "1", "-k", "sync", "-b",
            f"127.0.0.1:{port}", "--log-level", "warning", f"sdk_adapter_apps:{app}",
        ]  # fmt: skip
    environment = {**os.environ, "AMESH_BENCH_HOME": str(home)}
    if src is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(src), str(BENCH)])
    process = subprocess.Popen(command, env=environment)
    try:
        wait_listening(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(10)


def write_pool(key: PrivateKey, route: str, count: int, file: Path) -> None:
    signer = RequestSigner(key)
    signer.clock_offset = 8  # dated a little ahead: no request drifts past the warning mark
    digest = body_sha256(BODY)
    headers = (signer.authorization("POST", route, digest) for _ in range(count))
    file.write_text("\n".join(headers) + "\n", encoding="ascii")


def wrk(port: int, route: str, pool: Path, seconds: int, connections: int) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT + WRK_RESULT)
        script.flush()
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
            "-s", script.name, f"http://127.0.0.1:{port}{route}", "--", str(pool), route,
            BODY.decode(),
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests, duration_us, non_200, errors = wrk_result(output)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = requests - non_200
    return Run(ok / (duration_us / 1e6), non_200 + errors, 0.0, wrk_cpu / max(requests, 1) * 1e6)


def measure(
    adapter: str, home: Path, src: Path | None, key: PrivateKey, args: argparse.Namespace
) -> dict[str, Run]:
    """One server process: a warm-up, then /open and /guarded, each for ``--seconds``."""
    runs: dict[str, Run] = {}
    pool = home / "pool.txt"
    with serve(adapter, home, src) as (port, pid):
        write_pool(key, "/open", args.pool_rate, pool)
        wrk(port, "/open", pool, 1, args.connections)  # warm-up
        for route in ("/open", "/guarded"):
            write_pool(key, route, args.seconds * args.pool_rate, pool)
            cpu_before = tree_cpu_seconds(pid)
            run = wrk(port, route, pool, args.seconds, args.connections)
            cpu = tree_cpu_seconds(pid) - cpu_before
            answered = run.rate * args.seconds
            runs[route] = Run(run.rate, run.failures, cpu / max(answered, 1) * 1e6, run.wrk_us)
    return runs


def summary(label: str, rounds: list[dict[str, Run]]) -> dict[str, float]:
    def med(route: str, field: str) -> float:
        return statistics.median(getattr(r[route], field) for r in rounds)

    row = {
        "open_rps": med("/open", "rate"),
        "guarded_rps": med("/guarded", "rate"),
        "open_us": med("/open", "server_us"),
        "guarded_us": med("/guarded", "server_us"),
        "wrk_us": med("/guarded", "wrk_us"),
        "failures": sum(r["/guarded"].failures for r in rounds),
    }
    row["added_us"] = row["guarded_us"] - row["open_us"]
    added = [r["/guarded"].server_us - r["/open"].server_us for r in rounds]
    print(
        f"{label:22} open {row['open_rps']:6.0f} req/s {row['open_us']:5.0f} us | "
        f"verified {row['guarded_rps']:6.0f} req/s {row['guarded_us']:5.0f} us | "
        f"added {row['added_us']:4.0f} us (rounds {min(added):.0f}-{max(added):.0f}) | "
        f"wrk {row['wrk_us']:3.0f} us/req | non-200 {row['failures']:.0f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pool-rate", type=int, default=9000, help="pool headers per second")
    parser.add_argument("--before", type=Path, help="src directory of the code to compare with")
    parser.add_argument("--adapters", nargs="+", default=list(ADAPTERS), choices=list(ADAPTERS))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    key = PrivateKey.generate()
    versions: dict[str, Path | None] = {"after": None}
    if args.before is not None:
        versions = {"before": args.before.resolve(), "after": None}
    print(
        f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, load: wrk -t1 "
        f"-c{args.connections}, {args.seconds} s per run, median of {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        make_home(home, key)
        for adapter in args.adapters:
            rounds: dict[str, list[dict[str, Run]]] = {version: [] for version in versions}
            for _ in range(args.rounds):
                for version, src in versions.items():
                    rounds[version].append(measure(adapter, home, src, key, args))
            for version in versions:
                summary(f"{adapter} ({version})", rounds[version])


if __name__ == "__main__":
    main()
