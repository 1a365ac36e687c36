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
  authentication — is a :class:`~authmesh.shell.ShellError`, never exit 0 (W5).
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

from authmesh.core import AllowList, Device, Signer, device_id
from authmesh.core._text import printable
from authmesh.core.shell import ControllerSession, Outcome, ShellCipher, ShellHandshakeError
from authmesh.core.shell._frames import DATA_CHUNK_SIZE
from authmesh.core.shell._session import Close, ControllerAction
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import RelayClosed, RelayConnection
from authmesh.shell._channel import connect
from authmesh.shell._errors import SessionEnded, ShellError, leaves
from authmesh.shell._handshake import HANDSHAKE_TIMEOUT, run_controller_handshake

__all__ = ["KEEPALIVE_INTERVAL", "ShellRequest", "run_shell"]

KEEPALIVE_INTERVAL = 30.0
_BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """One ``amesh shell`` invocation."""

    relay_url: str
    target: Device
    command: str | None = None
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    keepalive_interval: float = KEEPALIVE_INTERVAL


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


def _relay_refusal(code: str) -> ShellError:
    """The relay answered the ``shell`` request with an error: exit status 5, as pairing's."""
    if code == "rate_limited":
        return ShellError(
            "rate_limited",
            "The relay refused the shell request (rate_limited); wait a minute and try again.",
        )
    return ShellError(
        "relay_refused",
        f"The relay refused the shell request ({code}); check the relay URL and try again.",
    )


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
                raise _relay_refusal(printable(str(first.get("code")), 40))
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
            return await _session(request, socket, established.cipher, terminal, out=out, say=say)
        finally:
            terminal.restore()
            established.cipher.close()
    finally:
        await socket.close()


class _Ended(Exception):
    """Raised inside the task group when the session is over."""

    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


class _Driver:
    """Moves bytes between the relay, the core session and the local terminal.

    Every task runs in one :class:`asyncio.TaskGroup`; the first to see the end raises
    :class:`_Ended` (or a :class:`ShellError`), which cancels and awaits all the others.
    """

    def __init__(
        self,
        request: ShellRequest,
        socket: RelayConnection,
        session: ControllerSession,
        terminal: _Terminal,
        out: BinaryIO,
    ) -> None:
        self._request = request
        self._socket = socket
        self._session = session
        self._terminal = terminal
        self._out = out
        self._send_lock = asyncio.Lock()
        self._resized = asyncio.Event()
        self._stopped: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def run(self) -> Close:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGHUP)
        for signum in handled:
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGWINCH, self._resized.set)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._flush())
                tasks.create_task(self._receive())
                tasks.create_task(self._keepalive())
                tasks.create_task(self._forward_resizes())
                tasks.create_task(self._watch_signals())
                if self._request.command is None:
                    tasks.create_task(self._forward_input())
        except BaseExceptionGroup as group:
            raise _first_reason(group) from None
        finally:
            for signum in (*handled, signal.SIGWINCH):
                loop.remove_signal_handler(signum)
        raise AssertionError("the session tasks ended without a reason")  # pragma: no cover

    def _on_signal(self, signum: int) -> None:
        if not self._stopped.done():
            self._stopped.set_result(signal.Signals(signum).name)

    async def _flush(self) -> None:
        """Send what the session queued, in counter order."""
        async with self._send_lock:
            while (message := self._session.next_message()) is not None:
                try:
                    # Shielded: a cancelled task never leaves a spent counter half sent.
                    await asyncio.shield(self._socket.send_text(message))
                except RelayClosed:
                    self._end(self._session.relay_closed())

    def _end(self, actions: list[ControllerAction]) -> None:
        for action in actions:
            if isinstance(action, Close):
                raise _Ended(action)
            self._write(action.data)

    def _write(self, data: bytes) -> None:
        try:
            self._out.write(data)
            self._out.flush()
        except BrokenPipeError:
            # `amesh shell t -c cmd | head`: the reader left. End like a shell pipeline does
            # (SIGPIPE status, no message); the remote side is ended when the socket closes.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._out.fileno())
            raise _Ended(Close(Outcome.EXITED, "output closed", _BROKEN_PIPE_STATUS)) from None

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await self._socket.receive(None)
            except RelayClosed:
                self._end(self._session.relay_closed())
                return
            except PairingError:  # not a JSON object: no conforming relay sends that
                raise _Ended(Close(Outcome.LOST, "the relay sent a malformed message")) from None
            self._end(self._session.receive(message, loop.time()))
            await self._flush()

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self._session.next_deadline() - loop.time()))
            self._end(self._session.tick(loop.time()))
            await self._flush()

    async def _forward_resizes(self) -> None:
        while True:
            await self._resized.wait()
            self._resized.clear()
            size = self._terminal.size()
            if size is not None:
                self._session.resize(*size)
                await self._flush()

    async def _forward_input(self) -> None:
        while data := await _read_input(self._terminal.stdin_fd):
            self._session.input(data)
            await self._flush()
        self._session.input_ended()
        await self._flush()
        # Input is over; the other tasks keep showing output until the remote shell exits.

    async def _watch_signals(self) -> None:
        name = await self._stopped
        raise ShellError("interrupted", f"Stopped by {name}; the remote shell was ended.")


def _first_reason(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended the task group: the session's end first, then a ShellError."""
    flat = leaves(group)
    for kind in (ShellError, _Ended):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return group


async def _session(
    request: ShellRequest,
    socket: RelayConnection,
    cipher: ShellCipher,
    terminal: _Terminal,
    *,
    out: BinaryIO,
    say: Callable[[str], None],
) -> int:
    name = request.target.friendly_name
    size = terminal.size()
    if request.command is None:
        terminal.enter_raw()
    elif not os.isatty(terminal.stdout_fd):
        size = None  # `-c` into a pipe: no terminal to size
    session = ControllerSession(
        cipher,
        now=asyncio.get_running_loop().time(),
        keepalive_interval=request.keepalive_interval,
        command=request.command,
        size=size,
        stdin_is_tty=terminal.stdin_is_tty,
    )
    try:
        close = await _Driver(request, socket, session, terminal, out).run()
    except _Ended as ended:
        close = ended.close
    finally:
        terminal.restore()
    if close.outcome is Outcome.TAMPERED:
        raise ShellError(
            "integrity",
            f'A frame from "{name}" failed authentication; the session was closed to protect '
            "it. Someone between the two devices may be tampering with traffic.",
        )
    if close.outcome is not Outcome.EXITED or close.status is None:
        raise ShellError(
            "connection_lost",
            f'The connection to "{name}" was lost before the remote shell exited ({close.reason}).',
        )
    if request.command is None:
        say(f"Connection to {name} closed (exit code {close.status}).")
    return close.status
