"""Remote shell through a real relay: keystroke round trip and bulk output throughput.

Starts ``python -m authmesh.relay`` and ``amesh agent start`` (shell ``/bin/sh``) on loopback
with two fresh, paired amesh homes, then drives a controller in-process with the library that
``amesh shell`` uses (handshake, session cipher, frames):

* keystroke latency: the session runs ``stty raw -echo; cat``; one byte goes out as a DATA
  frame and the time until ``cat`` sends it back is one round trip (controller → relay → agent
  → PTY → ``cat`` → PTY → agent → relay → controller, encrypted both ways);
* throughput: the session runs ``cat`` on a 4 MiB file (base64 text, no newlines, so the PTY
  does not expand anything) and the time from COMMAND until EXIT is measured.

Beside each figure: CPU time of the agent, the relay and this process (the load generator),
per keystroke and per MiB, read from ``/proc``. ``--agent-src DIR`` runs the agent from another
checkout's ``src`` (for before/after figures in one run; the relay and the controller stay the
same).

    .venv/bin/python bench/shell_latency.py [--keystrokes 500] [--runs 3] [--agent-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET, Device
from authmesh.core.shell._frames import (
    FrameType,
    decode_frame,
    encode_command,
    encode_data,
)
from authmesh.core.shell._wire import data_message
from authmesh.shell._channel import connect, receive_data
from authmesh.shell._handshake import run_controller_handshake
from authmesh.store import AmeshHome, create_identity, load_context, now_timestamp

FILE_BYTES = 4 * 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds (user + system) used by processes between :meth:`start` and :meth:`read`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    @staticmethod
    def _seconds(pid: int) -> float:
        if pid == os.getpid():
            return time.process_time()
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def start(self) -> None:
        self._start = {name: self._seconds(pid) for name, pid in self.pids.items()}

    def read(self) -> dict[str, float]:
        return {name: self._seconds(pid) - self._start[name] for name, pid in self.pids.items()}


def per_unit(cpu: dict[str, float], units: float, unit: str) -> str:
    return "  ".join(f"{name} {used / units * 1000:.3f} ms/{unit}" for name, used in cpu.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
            return b'"agents":1' in reply.read()
    except OSError:
        return False


def make_homes(base: Path) -> tuple[Path, Path, Device]:
    homes, identities = {}, {}
    for name in ("bench-target", "bench-controller"):
        home = base / name
        home.mkdir(mode=0o700)
        identities[name] = create_identity(
            name, backend="encrypted-file", home=AmeshHome(home), environ={}
        ).identity
        homes[name] = home
    target, controller = identities["bench-target"], identities["bench-controller"]
    load_context(home=AmeshHome(homes["bench-target"]), environ={}).allow_list.add(
        Device.new(
            device_id=controller.device_id,
            public_key=controller.public_key,
            friendly_name="bench-controller",
            role=ROLE_CONTROLLER,
            added_at=now_timestamp(),
            shell=True,
        )
    )
    target_entry = Device.new(
        device_id=target.device_id,
        public_key=target.public_key,
        friendly_name="bench-target",
        role=ROLE_TARGET,
        added_at=now_timestamp(),
    )
    load_context(home=AmeshHome(homes["bench-controller"]), environ={}).allow_list.add(target_entry)
    return homes["bench-target"], homes["bench-controller"], target_entry


class Session:
    """An in-process controller session (the library under ``amesh shell``)."""

    def __init__(self, url: str, home: Path, target: Device) -> None:
        self.url, self.target = url, target
        self.context = load_context(home=AmeshHome(home), environ={})

    async def open(self, command: str) -> None:
        self.socket = await connect(self.url)
        await self.socket.send(
            {
                "type": "shell",
                "targetDeviceId": self.target.device_id,
                "targetPublicKey": self.target.public_key,
            }
        )
        await self.socket.receive(10)
        established = await run_controller_handshake(
            self.socket,
            signer=self.context.signer,
            friendly_name="bench-controller",
            target=self.target,
            allow_list=self.context.allow_list.snapshot,
            term="xterm",
        )
        self.cipher = established.cipher
        await self.send(encode_command(command))

    async def send(self, frame: bytes) -> None:
        await self.socket.send_text(data_message(self.cipher.encrypt(frame)))

    async def frame(self):  # type: ignore[no-untyped-def]
        return decode_frame(self.cipher.decrypt(await receive_data(self.socket, 30)))

    async def close(self) -> None:
        await self.socket.close()


async def keystroke_latency(session: Session, count: int) -> list[float]:
    await session.open("stty raw -echo; echo READY; exec cat")
    seen = b""
    while b"READY" not in seen:
        frame = await session.frame()
        seen += frame.payload if frame.type is FrameType.DATA else b""
    samples = []
    for index in range(count):
        key = bytes([0x61 + index % 26])
        started = time.perf_counter()
        await session.send(encode_data(key))
        echoed = b""
        while key not in echoed:
            frame = await session.frame()
            if frame.type is FrameType.DATA:
                echoed += frame.payload
        samples.append((time.perf_counter() - started) * 1000)
    await session.close()
    return samples


async def throughput(session: Session, path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    await session.open(f"cat {path}")
    received = 0
    while True:
        frame = await session.frame()
        if frame.type is FrameType.DATA:
            received += len(frame.payload)
        elif frame.type is FrameType.EXIT:
            break
    elapsed = time.perf_counter() - started
    await session.close()
    return elapsed, received


async def measure(
    url: str, home: Path, target: Device, args: argparse.Namespace, path: Path, cpu: CpuMeter
) -> None:
    cpu.start()
    latency = await keystroke_latency(Session(url, home, target), args.keystrokes)
    print(f"CPU per keystroke: {per_unit(cpu.read(), len(latency), 'key')}")
    latency.sort()
    print(f"keystroke round trip over {len(latency)} keys (ms):")
    print(
        f"  median {statistics.median(latency):.2f}  p95 {latency[int(len(latency) * 0.95)]:.2f}"
        f"  p99 {latency[int(len(latency) * 0.99)]:.2f}  max {latency[-1]:.2f}"
    )
    rates = []
    cpu.start()
    for _ in range(args.runs):
        elapsed, received = await throughput(Session(url, home, target), path)
        if received != FILE_BYTES:
            raise RuntimeError(f"received {received} bytes, expected {FILE_BYTES}")
        rates.append(FILE_BYTES / elapsed / 2**20)
    print(f"cat of a 4 MiB file, {args.runs} runs (MiB/s, incl. handshake):")
    print(f"  best {max(rates):.1f}  median {statistics.median(rates):.1f}")
    mebibytes = args.runs * FILE_BYTES / 2**20
    print(f"CPU per MiB: {per_unit(cpu.read(), mebibytes, 'MiB')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keystrokes", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agent-src", type=Path, help="run the agent from this src directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amesh-bench-") as scratch:
        base = Path(scratch)
        target_home, controller_home, target_entry = make_homes(base)
        data_file = base / "4mib.txt"
        data_file.write_bytes(base64.b64encode(os.urandom(FILE_BYTES * 3 // 4)))
        port = free_port()
        url = f"ws://127.0.0.1:{port}/ws"
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
        relay = subprocess.Popen(
            [sys.executable, "-m", "authmesh.relay"], env=env, stdout=subprocess.DEVNULL
        )
        agent_env = {**os.environ, "AUTH_MESH_DIR": str(target_home)}
        if args.agent_src is not None:
            agent_env["PYTHONPATH"] = str(args.agent_src.resolve())
        agent = subprocess.Popen(
            [sys.executable, "-m", "authmesh.cli", "agent", "start", "--allow-root",
             "--relay", url, "--shell", "/bin/sh"],
            env=agent_env,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: healthy(port), 20, "the agent to register")
            cpu = CpuMeter({"agent": agent.pid, "relay": relay.pid, "load generator": os.getpid()})
            asyncio.run(measure(url, controller_home, target_entry, args, data_file, cpu))
        finally:
            for process in (agent, relay):
                process.send_signal(signal.SIGTERM)
                process.wait(10)


if __name__ == "__main__":
    main()
