"""PtyProcess reads may be cancelled without losing output (the agent cancels its output
task when a session ends)."""

from __future__ import annotations

import asyncio
import contextlib
import os

from authmesh.shell._pty_process import PtyProcess

BYTES = 40 * 20000


async def _read_everything_with_cancellations() -> int:
    process = await PtyProcess.spawn(
        "/bin/sh",
        # Full kernel pieces with pauses between them: reads then wait to gather more.
        ["-c", "for i in $(seq 40); do head -c 20000 /dev/zero | tr '\\0' x; sleep 0.01; done"],
        argv0="sh",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd="/",
        cols=80,
        rows=24,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    received = 0
    try:
        while received < BYTES and loop.time() < deadline:
            # Cancel reads at every stage of gathering; nothing may be lost.
            with contextlib.suppress(TimeoutError):
                received += len(await asyncio.wait_for(process.read(16384), 0.0005))
    finally:
        await process.terminate()
    return received


def test_cancelled_reads_lose_no_output() -> None:
    assert asyncio.run(_read_everything_with_cancellations()) == BYTES
