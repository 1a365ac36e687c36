"""The rules of an established shell session, without I/O: one object per side.

After the handshake each side holds a :class:`~authmesh.core.shell.ShellCipher`. A
session object takes what happens — a relay message, local input or output, a tick with the
time ``now`` — and returns what to do about it as actions; the relay messages it wants sent
wait, in counter order, from :meth:`next_message`. It never reads a clock, a socket or a
terminal, so every rule below is tested with a fake clock (``tests/core/test_shell_session.py``).

Rules both sides share: relay messages are dispatched by type (W8): ``data`` is opened with
the cipher, ``done`` and relay ``error`` end the session, anything else is ignored; a frame
that fails authentication or cannot be decoded ends the session (the counters would never
line up again); PING is answered with PONG.

Controller (:class:`ControllerSession`): starts with the terminal size and an empty DATA frame
(interactive) or a COMMAND (``-c``); DATA goes to the local output, EXIT ends the session with
the remote status; a PING every ``keepalive_interval`` and no frame for three intervals means
the target is gone (W3). A session that ends without EXIT is never a success (W5).

Agent (:class:`AgentSession`): waits up to ``first_frame_wait`` for the controller's first
frame (W2) — RESIZE sizes the terminal and shortens the wait, COMMAND runs ``-c`` (W9), DATA
or the end of the wait starts an interactive shell; then DATA and RESIZE go to the PTY and
count as activity, as does shell output; COMMAND after the start is ignored; no activity for
``idle_timeout`` stops the session, and the grant is re-checked every ``grant_check_interval``
(S5). A stopped session reports the shell's status with EXIT when the controller can still
hear it, then ``done``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from authmesh.core._text import printable
from authmesh.core.shell._cipher import ShellCipher, ShellCipherError
from authmesh.core.shell._frames import (
    Frame,
    FrameError,
    FrameType,
    data_frames,
    decode_frame,
    encode_command,
    encode_data,
    encode_exit,
    encode_ping,
    encode_pong,
    encode_resize,
)
from authmesh.core.shell._wire import WireError, data_message, data_payload, done_message

__all__ = [
    "AgentAction",
    "AgentSession",
    "CheckGrant",
    "Close",
    "ControllerAction",
    "ControllerSession",
    "Note",
    "Outcome",
    "Output",
    "ResizePty",
    "StartShell",
    "Stop",
    "WritePty",
]

# Missing keepalive answers before the target counts as gone (W3).
KEEPALIVE_MISSES = 3
_EOF = b"\x04"
_DEFAULT_SIZE = (80, 24)


class Outcome(Enum):
    """How a session ended."""

    EXITED = "exited"
    """The remote shell exited (controller) or the shell exited (agent)."""
    LOST = "lost"
    """The peer or the relay went away, or ended the session, without EXIT."""
    TAMPERED = "tampered"
    """A frame failed authentication or could not be decoded."""
    STOPPED = "stopped"
    """The agent ended the session: idle timeout or revoked grant."""


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over; ``reason`` is a short phrase for a log or a message."""

    outcome: Outcome
    reason: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """Controller: write ``data`` to the local terminal."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartShell:
    """Agent: start the shell on a PTY of ``cols`` x ``rows``; ``command`` for ``-c``."""

    cols: int
    rows: int
    command: str | None
    first_input: bytes


@dataclass(frozen=True, slots=True)
class WritePty:
    """Agent: controller input for the shell."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ResizePty:
    """Agent: the controller's terminal changed size."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class CheckGrant:
    """Agent: re-read the allow list; call :meth:`AgentSession.revoked` if the grant is gone."""


@dataclass(frozen=True, slots=True)
class Note:
    """Agent: something worth a log line that does not change the session."""

    text: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Agent: end the shell (if started), then call :meth:`AgentSession.finish`."""

    outcome: Outcome
    reason: str


ControllerAction = Output | Close
AgentAction = StartShell | WritePty | ResizePty | CheckGrant | Note | Stop

_RELAY_END_REASONS = {
    "done": "the {peer} ended the session",
    "peer_disconnected": "the {peer} disconnected",
    "session_expired": "the relay expired the idle session",
    "session_data_limit": "the relay's per-session data limit was reached",
}


class _Session:
    """What both sides share: the cipher, the outgoing queue, the dispatch of relay messages."""

    _peer = "peer"

    def __init__(self, cipher: ShellCipher) -> None:
        self._cipher = cipher
        self._outbox: deque[str] = deque()

    def _end_reason(self, code: str) -> str:
        template = _RELAY_END_REASONS.get(code, "relay: {code}")
        return template.format(peer=self._peer, code=printable(code, 40))

    def next_message(self) -> str | None:
        """The next relay message to send, in counter order, or None when none is queued.
        One at a time, so a driver cancelled between two sends leaves the rest queued: a
        frame whose counter is spent is never dropped."""
        return self._outbox.popleft() if self._outbox else None

    def _send(self, frame: bytes) -> None:
        self._outbox.append(data_message(self._cipher.encrypt(frame)))

    def _open(self, message: dict[str, Any]) -> Frame | Close | None:
        """The frame in a relay message, the end it announces, or None to ignore it."""
        kind = message.get("type")
        if kind == "done":
            return Close(Outcome.LOST, self._end_reason("done"))
        if kind == "error":
            code = message.get("code")
            return Close(Outcome.LOST, self._end_reason(code if isinstance(code, str) else "error"))
        if kind != "data":
            return None  # pong, and types a newer relay may add
        try:
            payload = data_payload(message.get("payload"))
        except WireError:
            return Close(Outcome.LOST, "the relay sent a malformed data message")
        try:
            return decode_frame(self._cipher.decrypt(payload))
        except (ShellCipherError, FrameError) as exc:
            return Close(Outcome.TAMPERED, f"a frame failed authentication ({exc})")


class ControllerSession(_Session):
    """The controller's side of an established session."""

    _peer = "target"

    def __init__(
        self,
        cipher: ShellCipher,
        *,
        now: float,
        keepalive_interval: float,
        command: str | None,
        size: tuple[int, int] | None,
        stdin_is_tty: bool,
    ) -> None:
        super().__init__(cipher)
        self._interval = keepalive_interval
        self._stdin_is_tty = stdin_is_tty
        self._last_heard = now
        self._next_ping = now + keepalive_interval
        self.closed: Close | None = None
        if size is not None:
            self._send(encode_resize(*size))
        # An empty DATA frame tells our agent to start an interactive shell now (W2).
        self._send(encode_data(b"") if command is None else encode_command(command))

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do."""
        return min(self._next_ping, self._last_heard + KEEPALIVE_MISSES * self._interval)

    def receive(self, message: dict[str, Any], now: float) -> list[ControllerAction]:
        if self.closed is not None:
            return []
        opened = self._open(message)
        if opened is None:
            return []
        if isinstance(opened, Close):
            return self._close(opened)
        self._last_heard = now
        if opened.type is FrameType.DATA:
            return [Output(opened.payload)]
        if opened.type is FrameType.EXIT:
            try:
                status = opened.exit_code() & 0xFF
            except FrameError as exc:
                return self._close(Close(Outcome.TAMPERED, str(exc)))
            return self._close(Close(Outcome.EXITED, "the remote shell exited", status))
        if opened.type is FrameType.PING:
            self._send(encode_pong())
        return []

    def input(self, data: bytes) -> None:
        """Local input, sent in DATA frames of at most 16 KiB (W6)."""
        if self.closed is None:
            for frame in data_frames(data):
                self._send(frame)

    def input_ended(self) -> None:
        """The local input ended: piped input is sent as Ctrl-D, so the remote shell ends."""
        if self.closed is None and not self._stdin_is_tty:
            self._send(encode_data(_EOF))

    def resize(self, cols: int, rows: int) -> None:
        if self.closed is None and cols > 0 and rows > 0:
            self._send(encode_resize(min(cols, 0xFFFF), min(rows, 0xFFFF)))

    def tick(self, now: float) -> list[ControllerAction]:
        if self.closed is not None:
            return []
        silent = now - self._last_heard
        if silent >= KEEPALIVE_MISSES * self._interval:
            return self._close(Close(Outcome.LOST, f"no answer for {silent:.0f} s"))
        if now >= self._next_ping:
            self._send(encode_ping())
            self._next_ping = now + self._interval
        return []

    def relay_closed(self) -> list[ControllerAction]:
        if self.closed is not None:
            return []
        return self._close(Close(Outcome.LOST, "the relay connection closed"))

    def _close(self, close: Close) -> list[ControllerAction]:
        self.closed = close
        self._cipher.close()
        return [close]


class _AgentPhase(Enum):
    WAITING = "waiting"  # for the controller's first frame
    RUNNING = "running"
    STOPPING = "stopping"  # told the driver to end the shell; waiting for finish()
    CLOSED = "closed"


class AgentSession(_Session):
    """The agent's side of an established session."""

    _peer = "controller"

    def __init__(
        self,
        cipher: ShellCipher,
        *,
        now: float,
        idle_timeout: float,
        first_frame_wait: float = 2.0,
        after_resize_wait: float = 0.25,
        grant_check_interval: float = 2.0,
    ) -> None:
        super().__init__(cipher)
        self._idle_timeout = idle_timeout
        self._after_resize_wait = after_resize_wait
        self._grant_interval = grant_check_interval
        self._phase = _AgentPhase.WAITING
        self._start_deadline = now + first_frame_wait
        self._size = _DEFAULT_SIZE
        self._last_activity = now
        self._next_grant_check = now + grant_check_interval
        self._exit_wanted = False
        self._stop_reason: tuple[Outcome, str] | None = None

    @property
    def started(self) -> bool:
        """Whether :class:`StartShell` was returned."""
        return self._phase is not _AgentPhase.WAITING

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do; None once stopping."""
        if self._phase is _AgentPhase.WAITING:
            return self._start_deadline
        if self._phase is not _AgentPhase.RUNNING:
            return None
        deadline = self._next_grant_check
        if self._idle_timeout > 0:
            deadline = min(deadline, self._last_activity + self._idle_timeout)
        return deadline

    def receive(self, message: dict[str, Any], now: float) -> list[AgentAction]:
        if self._phase in (_AgentPhase.STOPPING, _AgentPhase.CLOSED):
            return []
        opened = self._open(message)
        if opened is None:
            return []
        if isinstance(opened, Close):
            if opened.outcome is Outcome.TAMPERED:
                self._outbox.append(done_message())
            return self._stop(opened.outcome, opened.reason)
        if opened.type is FrameType.PING:
            self._send(encode_pong())
            return []
        if self._phase is _AgentPhase.WAITING:
            return self._first_frames(opened, now)
        return self._running(opened, now)

    def _first_frames(self, frame: Frame, now: float) -> list[AgentAction]:
        try:
            if frame.type is FrameType.RESIZE:
                size = frame.terminal_size()
                if size.cols > 0 and size.rows > 0:
                    self._size = (size.cols, size.rows)
                self._start_deadline = min(self._start_deadline, now + self._after_resize_wait)
                return []
            if frame.type is FrameType.COMMAND:
                return self._start(now, frame.command(), b"")
        except FrameError as exc:
            self._outbox.append(done_message())
            return self._stop(Outcome.TAMPERED, str(exc))
        if frame.type is FrameType.DATA:
            return self._start(now, None, frame.payload)
        return []

    def _running(self, frame: Frame, now: float) -> list[AgentAction]:
        if frame.type is FrameType.DATA:
            self._last_activity = now
            return [WritePty(frame.payload)] if frame.payload else []
        if frame.type is FrameType.RESIZE:
            self._last_activity = now
            try:
                size = frame.terminal_size()
            except FrameError as exc:
                self._outbox.append(done_message())
                return self._stop(Outcome.TAMPERED, str(exc))
            return [ResizePty(size.cols, size.rows)]
        if frame.type is FrameType.COMMAND:
            return [Note("ignoring a COMMAND after the start (W9)")]
        return []

    def _start(self, now: float, command: str | None, first_input: bytes) -> list[AgentAction]:
        self._phase = _AgentPhase.RUNNING
        self._last_activity = now
        self._next_grant_check = now + self._grant_interval
        return [StartShell(*self._size, command, first_input)]

    def output(self, data: bytes, now: float) -> None:
        """Shell output for the controller; output is activity too (a long ``-c`` job)."""
        if self._phase is _AgentPhase.RUNNING:
            self._last_activity = now
            for frame in data_frames(data):
                self._send(frame)

    def tick(self, now: float) -> list[AgentAction]:
        if self._phase is _AgentPhase.WAITING:
            if now >= self._start_deadline:
                return self._start(now, None, b"")
            return []
        if self._phase is not _AgentPhase.RUNNING:
            return []
        if self._idle_timeout > 0 and now - self._last_activity >= self._idle_timeout:
            self._exit_wanted = True
            return self._stop(Outcome.STOPPED, "idle timeout")
        if now >= self._next_grant_check:
            self._next_grant_check = now + self._grant_interval
            return [CheckGrant()]
        return []

    def revoked(self) -> list[AgentAction]:
        """The controller lost its shell grant."""
        if self._phase is not _AgentPhase.RUNNING:
            return []
        self._exit_wanted = True
        return self._stop(Outcome.STOPPED, "shell access revoked")

    def relay_closed(self) -> list[AgentAction]:
        if self._phase in (_AgentPhase.STOPPING, _AgentPhase.CLOSED):
            return []
        return self._stop(Outcome.LOST, "relay connection lost")

    def finish(self, status: int | None) -> Close:
        """The shell is over (``status`` None if it never started): the session's end.

        The controller hears EXIT when the shell exited by itself or the agent stopped it,
        then ``done``; after a lost peer or a tampered frame nothing more is sent.
        """
        stopping = self._stop_reason if self._phase is _AgentPhase.STOPPING else None
        self._phase = _AgentPhase.CLOSED
        if stopping is None or self._exit_wanted:
            if status is not None:
                self._send(encode_exit(status))
            self._outbox.append(done_message())
        self._cipher.close()
        if stopping is None:
            return Close(Outcome.EXITED, "shell exited", status)
        return Close(stopping[0], stopping[1], status)

    def _stop(self, outcome: Outcome, reason: str) -> list[AgentAction]:
        self._phase = _AgentPhase.STOPPING
        self._stop_reason = (outcome, reason)
        return [Stop(outcome, reason)]
