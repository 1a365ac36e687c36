"""One controller's shell on the agent, from ``peer_found`` to teardown.

The handshake (:func:`~authmesh.shell._handshake.run_target_handshake`) decides whether the
controller gets a session at all, within the pending deadline of
:class:`~authmesh.core.shell._admission.SessionSlots`. Then one :class:`asyncio.TaskGroup`
feeds an :class:`~authmesh.core.shell.AgentSession` with relay messages, shell output
and ticks, and carries out what it answers: start the shell on a PTY, write to it, resize it,
re-check the grant, stop. The first task that sees the end raises :class:`_End`, which cancels
and awaits all the others; the shell's whole process session is then killed
(:meth:`PtyProcess.terminate`) whatever the reason, so nothing wedges the agent (W1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
from typing import TYPE_CHECKING

from authmesh.core import Device
from authmesh.core._text import printable
from authmesh.core.shell import AgentSession, Established, Outcome, ShellHandshakeError
from authmesh.core.shell._frames import DATA_CHUNK_SIZE
from authmesh.core.shell._session import (
    AgentAction,
    CheckGrant,
    Close,
    Note,
    ResizePty,
    StartShell,
    Stop,
    WritePty,
)
from authmesh.core.shell._wire import done_message
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import RelayClosed
from authmesh.shell._channel import Channel
from authmesh.shell._errors import SessionEnded, leaves
from authmesh.shell._handshake import run_target_handshake
from authmesh.shell._pty_process import PtyProcess, login_environment
from authmesh.shell._recording import SessionRecorder
from authmesh.store import StoreError

if TYPE_CHECKING:
    from authmesh.shell._agent import Agent

__all__ = ["ShellSession"]

# How long a session waits for the controller's first frame before starting an interactive
# shell (reference controllers without a TTY send nothing until the user types; W2).
_FIRST_FRAME_WAIT = 2.0
# After a RESIZE, how long to wait for a COMMAND before deciding the session is interactive.
_AFTER_RESIZE_WAIT = 0.25
# After the shell exits, how long its output may take to drain before leftovers are killed.
_DRAIN_WAIT = 0.5
# At most this much of that output is read after the shell exits: a background job that
# keeps writing must not hold the agent's event loop or grow the session's outbox.
_DRAIN_LIMIT = 1024 * 1024
_REVOCATION_CHECK = 2.0


class _End(Exception):
    """Raised inside a session's task group when the session is over."""

    def __init__(self, *, shell_exited: bool = False, status: int | None = None) -> None:
        super().__init__("session over")
        self.shell_exited = shell_exited
        self.status = status


class ShellSession:
    """One controller's shell, from ``peer_found`` to teardown.

    The handshake decides whether the controller gets a session at all; then one
    :class:`asyncio.TaskGroup` feeds an :class:`~authmesh.core.shell.AgentSession`
    with relay messages, shell output and ticks, and carries out what it answers. The first
    task that sees the end raises :class:`_End`, which cancels and awaits all the others.
    """

    def __init__(self, agent: Agent, channel: Channel, number: int) -> None:
        self._agent = agent
        self._config = agent.config
        self._channel = channel
        self.number = number
        self._log = agent.log
        self._send_lock = asyncio.Lock()
        self._core: AgentSession | None = None
        self._process: PtyProcess | None = None
        self._recorder: SessionRecorder | None = None
        self._peer: Device | None = None
        self._peer_name = ""
        self._term: str | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Handshake, then serve; never raises (every outcome is logged)."""
        try:
            await self._run()
        except StoreError as exc:  # e.g. the allow list was tampered with: refuse, fail closed
            self._log.error("Session %d refused: %s", self.number, exc)
            await self._send_done()
        except Exception as exc:  # one broken session must not take the agent down
            self._log.error(
                "Session %d failed unexpectedly (%s: %s).", self.number, type(exc).__name__, exc
            )
            await self._send_done()

    async def _send_done(self) -> None:
        # Ends the relay session at once (the registration socket is free for the next one)
        # and tells our controller the target ended it; reference controllers ignore `done`.
        with contextlib.suppress(RelayClosed):
            await self._channel.send_text(done_message())

    async def _handshake(self) -> Established | None:
        """The handshake within the pending deadline; None (logged) if it did not succeed."""
        agent = self._agent
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(agent.slots.deadline(self.number) or loop.time()):
                return await run_target_handshake(
                    self._channel,
                    signer=agent.identity.signer,
                    friendly_name=agent.identity.friendly_name,
                    allow_list=agent.identity.allow_list,
                    timeout=self._config.handshake_timeout,
                    admit=lambda: agent.slots.authenticate(self.number, loop.time()),
                )
        except ShellHandshakeError as exc:
            agent.limited_log.warning("Session %d refused: %s", self.number, exc)
        except TimeoutError:
            agent.limited_log.warning(
                "Session %d: the controller did not complete the handshake in time.", self.number
            )
        except (SessionEnded, RelayClosed):
            agent.limited_log.info(
                "Session %d: the controller left during the handshake.", self.number
            )
            return None
        # Not a wire message of the reference, but `done` exists: our controller stops
        # waiting at once; a reference controller ignores it and times out as before.
        await self._send_done()
        return None

    async def _run(self) -> None:
        established = await self._handshake()
        if established is None:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._peer = established.peer
        self._peer_name = printable(established.peer.friendly_name)
        self._term = established.term
        self._core = AgentSession(
            established.cipher,
            now=started,
            idle_timeout=self._config.idle_timeout,
            first_frame_wait=_FIRST_FRAME_WAIT,
            after_resize_wait=_AFTER_RESIZE_WAIT,
            grant_check_interval=_REVOCATION_CHECK,
        )
        end = _End()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._receive())
                tasks.create_task(self._ticks())
        except BaseExceptionGroup as group:
            end = self._session_end(group)
        except asyncio.CancelledError:  # the agent is stopping: no goodbye, but no leftovers
            if self._process is not None:
                await self._process.terminate()
            if self._recorder is not None:
                self._recorder.close()
            raise
        finally:
            self._tasks = None
        close = await self._finish(end)
        self._log_close(close, loop.time() - started)

    def _log_close(self, close: Close, duration: float) -> None:
        reason = printable(close.reason, 120)
        if close.status is None:
            self._log.warning(
                "Session %d with %s ended before it started (%s).",
                self.number,
                self._peer_name,
                reason,
            )
            return
        if close.outcome is Outcome.LOST:
            reason = f"controller gone: {reason}"
        self._log.info(
            "Session %d closed (%s, exit %d, %.1f s).", self.number, reason, close.status, duration
        )

    async def _finish(self, end: _End) -> Close:
        """End the shell, let the core say goodbye, send it, close the recording."""
        core = self._core
        assert core is not None
        process, status = self._process, end.status
        try:
            if process is not None:
                if end.shell_exited:
                    await self._drain(process)
                status = await process.terminate()
            close = core.finish(status)
            if close.outcome is Outcome.TAMPERED:
                self._log.warning("Session %d: %s.", self.number, close.reason)
            with contextlib.suppress(RelayClosed):
                await self._flush()
            return close
        finally:
            if self._recorder is not None:
                self._recorder.close()

    async def _drain(self, process: PtyProcess) -> None:
        """The shell exited: output still buffered (a background job kept the terminal
        open, so the output task never saw its end) goes out before EXIT."""
        loop = asyncio.get_running_loop()
        drained = 0
        while drained < _DRAIN_LIMIT and (data := process.read_available(DATA_CHUNK_SIZE)):
            drained += len(data)
            self._output(data, loop.time())

    def _output(self, data: bytes, now: float) -> None:
        assert self._core is not None
        if self._recorder is not None:
            self._recorder.output(data)
        self._core.output(data, now)

    async def _flush(self) -> None:
        """Send what the core queued, in counter order."""
        assert self._core is not None
        async with self._send_lock:
            while (message := self._core.next_message()) is not None:
                # Shielded: a cancelled task never leaves a spent counter half sent.
                await asyncio.shield(self._channel.send_text(message))

    async def _send_queued(self) -> None:
        try:
            await self._flush()
        except RelayClosed:
            assert self._core is not None
            await self._apply(self._core.relay_closed())

    async def _receive(self) -> None:
        core = self._core
        assert core is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await self._channel.receive(None)
            except RelayClosed:
                await self._apply(core.relay_closed())
                return
            except PairingError:  # not a JSON object: no conforming relay sends that
                await self._apply(core.relay_closed())
                return
            await self._apply(core.receive(message, loop.time()))
            self._wake.set()  # the ticker re-reads the deadline the frame may have moved
            await self._send_queued()

    async def _ticks(self) -> None:
        core = self._core
        assert core is not None
        loop = asyncio.get_running_loop()
        while True:
            deadline = core.next_deadline()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()  # a frame may have moved the deadline
            actions = core.tick(loop.time())
            for action in actions:
                if isinstance(action, CheckGrant) and not self._still_granted():
                    actions = core.revoked()
                    break
            await self._apply(actions)
            await self._send_queued()

    def _still_granted(self) -> bool:
        return self._peer is not None and self._agent.still_granted(self._peer)

    async def _apply(self, actions: list[AgentAction]) -> None:
        """Carry out what the core asked for."""
        for action in actions:
            if isinstance(action, StartShell):
                await self._start(action)
            elif isinstance(action, WritePty) and self._process is not None:
                await self._process.write(action.data)
            elif isinstance(action, ResizePty) and self._process is not None:
                self._process.resize(action.cols, action.rows)
                if self._recorder is not None:
                    self._recorder.resize(action.cols, action.rows)
            elif isinstance(action, Note):
                self._log.warning("Session %d: %s.", self.number, action.text)
            elif isinstance(action, Stop):
                raise _End()

    async def _start(self, start: StartShell) -> None:
        user = pwd.getpwuid(os.getuid())
        shell = self._config.shell or user.pw_shell or "/bin/sh"
        env = login_environment(os.environ, user, shell, self._term)
        if start.command is None:
            argv0, args = "-" + os.path.basename(shell), []
            mode = f"interactive, {start.cols}x{start.rows}"
        else:
            argv0, args = shell, ["-c", start.command]
            mode = f"command {printable(start.command, 200)!r}"
        cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
        self._log.info("Session %d opened by %s (%s).", self.number, self._peer_name, mode)
        self._recorder = self._open_recording(start, env["TERM"], shell)
        try:
            process = await PtyProcess.spawn(
                shell, args, argv0=argv0, env=env, cwd=cwd, cols=start.cols, rows=start.rows
            )
        except OSError as exc:
            self._log.error("Session %d: could not start %s (%s).", self.number, shell, exc)
            raise _End(status=127) from None
        self._process = process
        if start.first_input:
            await process.write(start.first_input)
        assert self._tasks is not None
        self._tasks.create_task(self._pump_output(process))
        self._tasks.create_task(self._watch_exit(process))

    def _open_recording(self, start: StartShell, term: str, shell: str) -> SessionRecorder | None:
        if self._config.record_dir is None:
            return None
        try:
            return SessionRecorder(
                self._config.record_dir,
                session_number=self.number,
                cols=start.cols,
                rows=start.rows,
                title=f"session {self.number} by {self._peer_name}",
                env={"TERM": term, "SHELL": shell},
            )
        except OSError as exc:
            self._log.error("Session %d: cannot record (%s); recording skipped.", self.number, exc)
            return None

    async def _pump_output(self, process: PtyProcess) -> None:
        loop = asyncio.get_running_loop()
        while data := await process.read(DATA_CHUNK_SIZE):
            self._output(data, loop.time())
            await self._send_queued()
        raise _End(shell_exited=True)  # the terminal closed: the shell is over

    async def _watch_exit(self, process: PtyProcess) -> None:
        await process.wait()
        # The output task ends the session when the terminal closes; give it time to send
        # what the shell wrote last. A background job may keep the terminal open: then stop.
        await asyncio.sleep(_DRAIN_WAIT)
        raise _End(shell_exited=True)

    def _session_end(self, group: BaseExceptionGroup[BaseException]) -> _End:
        """The :class:`_End` that closed the task group; any other failure is logged."""
        ends: list[_End] = []
        for exc in leaves(group):
            if isinstance(exc, _End):
                ends.append(exc)
            else:
                self._log.error(
                    "Session %d failed unexpectedly (%s: %s).",
                    self.number,
                    type(exc).__name__,
                    exc,
                )
        return ends[0] if ends else _End()
