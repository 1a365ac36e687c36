"""Waiting and asking while an asyncio exchange with the relay is running.

A spinner with a live countdown shows how long a pairing code, a confirmation or a token
stays usable; questions are read on a daemon thread so the event loop keeps serving the relay
connection while the operator types, and an abandoned question never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time

from rich.console import Console
from rich.status import Status

from authmesh.cli._output import human_stream

__all__ = ["Spinner", "ask"]

_TICK_SECONDS = 0.25


def _format_left(seconds: float) -> str:
    whole = max(0, int(seconds + 0.999))
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Spinner:
    """One spinner line on stderr (``message (N s left)``), shown and hidden as steps change.

    Without a capable terminal (pipes, CI, TERM=dumb) each message is printed once, with the
    time left at that moment, and nothing animates.
    """

    def __init__(self) -> None:
        self._console = Console(stderr=True, highlight=False)
        self._status: Status | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._message = ""
        self._deadline: float | None = None

    def _text(self) -> str:
        if self._deadline is None:
            return self._message
        return f"{self._message} ({_format_left(self._deadline - time.monotonic())} left)"

    async def _tick(self) -> None:
        while self._status is not None:
            self._status.update(self._text())
            await asyncio.sleep(_TICK_SECONDS)

    def show(self, message: str, seconds: float | None = None) -> None:
        """Show ``message``, with a countdown when ``seconds`` is given."""
        self._message = message
        self._deadline = time.monotonic() + seconds if seconds is not None else None
        if not self._console.is_terminal or self._console.is_dumb_terminal:
            sys.stderr.write(self._text() + "\n")
            sys.stderr.flush()
            return
        if self._status is None:
            self._status = self._console.status(self._text())
            self._status.start()
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        """Hide the spinner (before printing a question or a result)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._status is not None:
            self._status.stop()
            self._status = None


_pending_input = bytearray()
_input_lock = threading.Lock()


def _read_line_unbuffered() -> str | None:
    """One line from fd 0 via ``os.read``: a daemon thread blocked here holds no lock of
    ``sys.stdin``'s buffer, which would abort the interpreter at exit."""
    with _input_lock:
        while b"\n" not in _pending_input:
            try:
                chunk = os.read(0, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if not _pending_input:
                    return None
                break
            _pending_input.extend(chunk)
        line, _, rest = bytes(_pending_input).partition(b"\n")
        _pending_input[:] = rest
    return line.decode("utf-8", "replace").removesuffix("\r")


async def ask(prompt: str) -> str | None:
    """Print ``prompt`` and read one line without blocking the loop (``None`` at end of input).

    Only the line terminator is removed; callers decide about trimming.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()

    def deliver(result: str | None) -> None:
        if not answer.done():
            answer.set_result(result)

    def read() -> None:
        result = _read_line_unbuffered()
        # The loop may be gone when the operator answers a question nobody waits for.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result)

    stream = human_stream()
    stream.write(prompt)
    stream.flush()
    threading.Thread(target=read, name="amesh-prompt", daemon=True).start()
    return await answer
