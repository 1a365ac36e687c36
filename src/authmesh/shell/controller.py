"""The controller side of ``amesh shell``: connect, verify the target, run the terminal.

Wire behaviour is the reference's (spec shell §2.1, §3, §7); the local behaviour is fixed:

* the answering device must be the requested target (S4), and messages the target sends
  while we verify it stay queued for the session (W2);
* the local terminal goes to raw mode only for an interactive session on a TTY and is restored
  on every exit path (EXIT, lost connection, errors, SIGTERM/SIGHUP, Ctrl-C in ``-c`` mode);
* SIGWINCH becomes a RESIZE; stdin is sent in DATA frames of at most 16 KiB (W6); when stdin
  is not a terminal its end is sent as Ctrl-D, so piped sessions end;
* the remote exit code becomes ours; a session that ends without an EXIT frame — relay gone,
  target gone, no keepalive answer for three intervals (W3), a frame that fails
  authentication — is a :class:`~authmesh.shell.errors.ShellError`, never exit 0 (W5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.keys import device_id
from authmesh.core.selfsig import Signer
from authmesh.core.shell.cipher import ShellCipher, ShellCipherError
from authmesh.core.shell.frames import (
    DATA_CHUNK_SIZE,
    FrameError,
    FrameType,
    decode_frame,
    encode_command,
    encode_data,
    encode_ping,
    encode_resize,
)
from authmesh.core.shell.handshake import ShellHandshakeError
from authmesh.core.shell.wire import data_message
from authmesh.pairing.relay_client import RelayClosed, RelayConnection
from authmesh.shell.channel import connect, receive_data
from authmesh.shell.errors import SessionEnded, ShellError
from authmesh.shell.handshake import HANDSHAKE_TIMEOUT, run_controller_handshake

__all__ = ["KEEPALIVE_INTERVAL", "ShellRequest", "run_shell"]

KEEPALIVE_INTERVAL = 30.0
# Missing keepalive answers before the target counts as gone (W3).
_KEEPALIVE_MISSES = 3
_EOF = b"\x04"
_BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE
_END_REASONS = {
    "done": "the target ended the session",
    "peer_disconnected": "the target disconnected",
    "session_expired": "the relay expired the idle session",
    "session_data_limit": "the relay's per-session data limit was reached",
}


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """One ``amesh shell`` invocation."""

    relay_url: str
    target: Device
    command: str | None = None
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    keepalive_interval: float = KEEPALIVE_INTERVAL


class _Lost(Exception):
    """The session ended without an EXIT frame."""


class _Terminal:
    """The local terminal: raw mode while interactive, restored exactly once."""

    def __init__(self, stdin_fd: int, stdout_fd: int) -> None:
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stdin_is_tty = os.isatty(stdin_fd)
        self._saved: list[Any] | None = None

    def size(self) -> tuple[int, int] | None:
        for fd in (self.stdout_fd, self.stdin_fd):
            with contextlib.suppress(OSError):
                size = os.get_terminal_size(fd)
                if size.columns > 0 and size.lines > 0:
                    return size.columns, size.lines
        return None

    def enter_raw(self) -> None:
        if self.stdin_is_tty and self._saved is None:
            self._saved = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd, termios.TCSANOW)

    def restore(self) -> None:
        if self._saved is not None:
            saved, self._saved = self._saved, None
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, saved)


def _handshake_failure(exc: BaseException, request: ShellRequest, own_id: str) -> ShellError:
    name = request.target.friendly_name
    grant = f"on the target run: amesh grant {own_id} --shell"
    if isinstance(exc, TimeoutError):
        return ShellError(
            "no_answer",
            f'"{name}" did not answer within {request.handshake_timeout:.0f} s: its agent is '
            f"not running (start it with amesh agent start), is busy, or has not granted this "
            f"device shell access ({grant}).",
        )
    if isinstance(exc, SessionEnded) and exc.reason in ("done", "peer_disconnected"):
        return ShellError(
            "refused",
            f'"{name}" refused the session: it has not granted this device shell access or is '
            f"at its session limit; {grant}.",
        )
    if isinstance(exc, SessionEnded):
        return ShellError(
            "relay_ended",
            f"The relay ended the session before it started ({exc.reason}); try again.",
        )
    if isinstance(exc, RelayClosed):
        return ShellError(
            "relay_closed",
            "The relay closed the connection before the session started; try again.",
        )
    return ShellError("handshake_failed", f'Handshake with "{name}" failed: {exc}')


async def _read_input(fd: int) -> bytes:
    """Up to one DATA chunk from ``fd``; ``b""`` at end of input."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except PermissionError:  # a regular file: always readable, never blocks
        return os.read(fd, DATA_CHUNK_SIZE)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, DATA_CHUNK_SIZE)
    except BlockingIOError:
        return await _read_input(fd)
    except OSError:
        return b""


async def run_shell(
    request: ShellRequest,
    *,
    signer: Signer,
    friendly_name: str,
    allow_list: Callable[[], AllowList],
    stdin_fd: int = 0,
    stdout: BinaryIO | None = None,
    notice: Callable[[str], None] | None = None,
) -> int:
    """Run one remote shell; returns the remote exit status (0..255).

    Raises :class:`ShellError` for every failure, with the terminal already restored.
    """
    out = stdout or sys.stdout.buffer
    say = notice or (lambda line: print(line, file=sys.stderr, flush=True))
    own_id = device_id(signer.public_key)
    target = request.target
    socket = await connect(request.relay_url)
    try:
        await socket.send(
            {
                "type": "shell",
                "targetDeviceId": target.device_id,
                "targetPublicKey": target.public_key,
            }
        )
        try:
            first = await socket.receive(request.handshake_timeout)
            if first.get("type") == "error":
                code = str(first.get("code"))
                raise ShellError(
                    "relay_error",
                    f"The relay refused the shell request ({code}); "
                    + (
                        "wait a minute and try again."
                        if code == "rate_limited"
                        else "check the relay URL and try again."
                    ),
                )
            established = await run_controller_handshake(
                socket,
                signer=signer,
                friendly_name=friendly_name,
                target=target,
                allow_list=allow_list,
                term=os.environ.get("TERM"),
                timeout=request.handshake_timeout,
            )
        except (TimeoutError, SessionEnded, RelayClosed, ShellHandshakeError) as exc:
            raise _handshake_failure(exc, request, own_id) from None
        terminal = _Terminal(stdin_fd, out.fileno() if hasattr(out, "fileno") else 1)
        try:
            return await _session(request, socket, established.cipher, terminal, out, say)
        finally:
            terminal.restore()
            established.cipher.close()
    finally:
        await socket.close()


async def _session(
    request: ShellRequest,
    socket: RelayConnection,
    cipher: ShellCipher,
    terminal: _Terminal,
    out: BinaryIO,
    say: Callable[[str], None],
) -> int:
    loop = asyncio.get_running_loop()
    name = request.target.friendly_name
    send_lock = asyncio.Lock()
    last_heard = loop.time()

    async def send(frame: bytes) -> None:
        async with send_lock:  # counters leave in the order they were spent
            await socket.send_text(data_message(cipher.encrypt(frame)))

    async def receive() -> int:
        nonlocal last_heard
        while True:
            try:
                payload = await receive_data(socket, None)
            except SessionEnded as exc:
                raise _Lost(_END_REASONS.get(exc.reason, f"relay: {exc.reason}")) from None
            except RelayClosed:
                raise _Lost("the relay connection closed") from None
            try:
                frame = decode_frame(cipher.decrypt(payload))
            except (ShellCipherError, FrameError):
                raise ShellError(
                    "integrity",
                    f'A frame from "{name}" failed authentication; the session was closed to '
                    "protect it. Someone between the two devices may be tampering with traffic.",
                ) from None
            last_heard = loop.time()
            if frame.type is FrameType.DATA:
                try:
                    out.write(frame.payload)
                    out.flush()
                except BrokenPipeError:
                    # `amesh shell t -c cmd | head`: the reader left. End like a shell
                    # pipeline does (SIGPIPE status, no message); the remote side is ended.
                    with contextlib.suppress(OSError, ValueError):
                        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
                    return _BROKEN_PIPE_STATUS
            elif frame.type is FrameType.EXIT:
                return frame.exit_code() & 0xFF

    async def forward_input() -> None:
        while data := await _read_input(terminal.stdin_fd):
            await send(encode_data(data))
        if not terminal.stdin_is_tty:
            await send(encode_data(_EOF))

    async def keepalive() -> None:
        interval = request.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            if loop.time() - last_heard > _KEEPALIVE_MISSES * interval:
                raise _Lost(f"no answer for {_KEEPALIVE_MISSES * interval:.0f} s")
            await send(encode_ping())

    resized = asyncio.Event()
    stopped: asyncio.Future[str] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(signal.Signals(signum).name)

    size = terminal.size()
    if request.command is None:
        terminal.enter_raw()
        if size is not None:
            await send(encode_resize(*size))
        # An empty DATA frame tells our agent to start an interactive shell now (W2).
        await send(encode_data(b""))
    else:
        if size is not None and os.isatty(terminal.stdout_fd):
            await send(encode_resize(*size))
        await send(encode_command(request.command))

    handled = [signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH]
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGWINCH, resized.set)

    async def forward_resizes() -> None:
        while True:
            await resized.wait()
            resized.clear()
            current = terminal.size()
            if current is not None:
                await send(encode_resize(*current))

    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(receive()),
        asyncio.create_task(keepalive()),
        asyncio.create_task(forward_resizes()),
    ]
    if request.command is None:
        tasks.append(asyncio.create_task(forward_input()))
    receiver = tasks[0]
    watched: set[asyncio.Future[Any]] = {*tasks, stopped}
    try:
        while True:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                raise ShellError(
                    "interrupted", f"Stopped by {stopped.result()}; the remote shell was ended."
                )
            failed = [task for task in done if task is not receiver and task.exception()]
            if receiver in done or failed:
                break
            watched -= done  # stdin ended: keep showing output until the remote shell exits
        try:
            status = int((receiver if receiver.done() else failed[0]).result())
        except (_Lost, RelayClosed) as exc:
            detail = f" ({exc})" if isinstance(exc, _Lost) else ""
            raise ShellError(
                "connection_lost",
                f'The connection to "{name}" was lost before the remote shell exited{detail}.',
            ) from None
        terminal.restore()
        if request.command is None:
            say(f"Connection to {name} closed (exit code {status}).")
        return status
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopped.cancel()
        terminal.restore()
