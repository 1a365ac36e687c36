"""The shell agent: stays registered with the relay and serves shells to granted controllers.

Registration (spec shell §1) is the reference's ``agent`` → ``agent_challenge`` →
``agent_challenge_response`` → ``agent_registered`` exchange, with our protocol 2 on top:

* the ``agent`` message carries ``"protocol": 2``; a relay that speaks it answers with
  ``"protocol": 2`` in ``agent_challenge`` and the agent signs the domain-prefixed form
  (:attr:`~authmesh.core.shell.challenge.ChallengeScheme.V2`). Only a challenge without it —
  what a reference relay sends — is answered in the legacy form, and then only if it is a
  UUID (weakness S1). Only the one challenge that follows our own ``agent`` message is signed.
* a protocol-2 relay announces each shell request with ``shell_request`` and a one-time session
  token; the agent opens a dedicated socket for it (``agent_session``), so sessions are
  independent and concurrent and a request can never divert a live session (S3). On a legacy
  relay the registration socket carries one session at a time.
* only authenticated sessions count against ``max_sessions``; handshakes still pending have
  their own small budget and a short deadline
  (:class:`~authmesh.core.shell.admission.SessionSlots`), and the lines such unauthenticated
  requests make the agent log are rate-limited, so requesters that never answer can neither
  lock out a granted controller nor flood the log.
* any registration error is logged and answered by reconnecting with backoff (W7); so is a
  heartbeat without ``pong`` for two intervals. The backoff doubles from 1 s to 30 s, with
  jitter (W11), and resets once registered.

Each session (:class:`ShellSession`) ends for any reason — shell exit, controller gone,
``done``, relay loss, a frame that fails authentication, idle timeout, revoked grant — with the
whole process session killed (:meth:`PtyProcess.terminate`), so nothing wedges the agent (W1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.b64 import b64encode
from authmesh.core.keys import device_id
from authmesh.core.selfsig import Signer
from authmesh.core.shell.admission import (
    DEFAULT_MAX_PENDING,
    DEFAULT_PENDING_TIMEOUT,
    SessionSlots,
)
from authmesh.core.shell.challenge import ChallengeError, ChallengeScheme, sign_challenge
from authmesh.core.shell.cipher import ShellCipher, ShellCipherError
from authmesh.core.shell.frames import (
    DATA_CHUNK_SIZE,
    Frame,
    FrameError,
    FrameType,
    decode_frame,
    encode_data,
    encode_exit,
    encode_pong,
)
from authmesh.core.shell.handshake import ShellHandshakeError
from authmesh.core.shell.wire import challenge_response_message, data_message
from authmesh.pairing.errors import PairingError
from authmesh.pairing.relay_client import RelayClosed, RelayConnection, encode_frame
from authmesh.shell.channel import Channel, SessionPipe, connect, receive_data
from authmesh.shell.errors import SessionEnded
from authmesh.shell.handshake import HANDSHAKE_TIMEOUT, run_target_handshake
from authmesh.shell.log_limit import LimitedLog
from authmesh.shell.pty_process import PtyProcess, login_environment
from authmesh.shell.recording import SessionRecorder
from authmesh.store.errors import StoreError

__all__ = [
    "PROTOCOL_VERSION",
    "Agent",
    "AgentConfig",
    "ShellSession",
    "printable",
]

PROTOCOL_VERSION = 2
_BACKOFF_START = 1.0
_BACKOFF_MAX = 30.0
# How long a session waits for the controller's first frame before starting an interactive
# shell (reference controllers without a TTY send nothing until the user types; W2).
_FIRST_FRAME_WAIT = 2.0
# After a RESIZE, how long to wait for a COMMAND before deciding the session is interactive.
_AFTER_RESIZE_WAIT = 0.25
# After the shell exits, how long its output may take to drain before leftovers are killed.
_DRAIN_WAIT = 0.5
_WATCHDOG_INTERVAL = 1.0
_REVOCATION_CHECK = 2.0
_DEFAULT_SIZE = (80, 24)
# Relay errors that end the session riding on the registration socket.
_SESSION_ERRORS = frozenset({"peer_disconnected", "session_expired", "session_data_limit"})

_random = secrets.SystemRandom()


def printable(text: str, limit: int = 64) -> str:
    """``text`` made safe for a log line: printable characters only, at most ``limit`` (S8)."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything ``amesh agent start`` can set."""

    relay_url: str
    max_sessions: int = 4
    """Concurrent authenticated sessions."""
    max_pending: int = DEFAULT_MAX_PENDING
    """Concurrent handshakes not yet authenticated; the oldest makes room for a new one."""
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT
    """Seconds from a shell request to an authenticated controller."""
    idle_timeout: float = 30 * 60.0
    """Seconds without controller input or shell output before a session ends; 0 disables."""
    heartbeat_interval: float = 30.0
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    shell: str | None = None
    """Shell program; ``None`` is the user's login shell."""
    record_dir: Path | None = None
    protocol: int = PROTOCOL_VERSION
    """1 registers exactly as a reference agent does (no ``protocol`` member, legacy sessions)."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """What the agent proves and presents: its key and the names the allow list is read with."""

    signer: Signer
    friendly_name: str
    allow_list: Callable[[], AllowList]

    @property
    def device_id(self) -> str:
        return device_id(self.signer.public_key)


class _Tampered(Exception):
    """A frame failed authentication or could not be parsed: end the session."""


class _Stop(Exception):
    """A watchdog reason to end the session (idle, revoked)."""


class ShellSession:
    """One controller's shell, from ``peer_found`` to teardown."""

    def __init__(
        self,
        agent: Agent,
        channel: Channel,
        number: int,
    ) -> None:
        self._agent = agent
        self._config = agent.config
        self._channel = channel
        self.number = number
        self._log = agent.log
        self._send_lock = asyncio.Lock()
        self._cipher: ShellCipher | None = None
        self._last_activity = time.monotonic()

    async def _send_frame(self, frame: bytes) -> None:
        # One lock for encrypt + send: counters go out in the order they were spent.
        async with self._send_lock:
            assert self._cipher is not None
            await self._channel.send_text(data_message(self._cipher.encrypt(frame)))

    async def _send_done(self) -> None:
        # Ends the relay session at once (the registration socket is free for the next one)
        # and tells our controller the target ended it; reference controllers ignore `done`.
        with contextlib.suppress(RelayClosed):
            await self._channel.send_text(encode_frame({"type": "done"}))

    async def _next_frame(self, timeout: float | None) -> Frame:
        payload = await receive_data(self._channel, timeout)
        assert self._cipher is not None
        try:
            return decode_frame(self._cipher.decrypt(payload))
        except (ShellCipherError, FrameError) as exc:
            raise _Tampered(str(exc)) from None

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

    async def _run(self) -> None:
        agent = self._agent
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(agent.slots.deadline(self.number) or loop.time()):
                established = await run_target_handshake(
                    self._channel,
                    signer=agent.identity.signer,
                    friendly_name=agent.identity.friendly_name,
                    allow_list=agent.identity.allow_list,
                    timeout=self._config.handshake_timeout,
                    admit=lambda: agent.slots.authenticate(self.number, loop.time()),
                )
        except ShellHandshakeError as exc:
            agent.limited_log.warning("Session %d refused: %s", self.number, exc)
            # Not a wire message of the reference, but `done` exists: our controller stops
            # waiting at once; a reference controller ignores it and times out as before.
            await self._send_done()
            return
        except TimeoutError:
            agent.limited_log.warning(
                "Session %d: the controller did not complete the handshake in time.", self.number
            )
            await self._send_done()
            return
        except (SessionEnded, RelayClosed):
            agent.limited_log.info(
                "Session %d: the controller left during the handshake.", self.number
            )
            return
        self._cipher = established.cipher
        try:
            await self._serve(established.peer, established.term)
        finally:
            self._cipher.close()

    async def _first_frames(self) -> tuple[tuple[int, int], str | None, bytes]:
        """Wait for the controller's first frame: size, ``-c`` command, first input (W2, W9)."""
        loop = asyncio.get_running_loop()
        size, command, first_input = _DEFAULT_SIZE, None, b""
        deadline = loop.time() + _FIRST_FRAME_WAIT
        while True:
            try:
                frame = await self._next_frame(max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
            if frame.type is FrameType.RESIZE:
                dims = frame.terminal_size()
                if dims.cols > 0 and dims.rows > 0:
                    size = (dims.cols, dims.rows)
                deadline = min(deadline, loop.time() + _AFTER_RESIZE_WAIT)
            elif frame.type is FrameType.PING:
                await self._send_frame(encode_pong())
            elif frame.type is FrameType.COMMAND:
                try:
                    command = frame.command()
                except FrameError as exc:
                    raise _Tampered(str(exc)) from None
                break
            elif frame.type is FrameType.DATA:
                first_input = frame.payload
                break
        return size, command, first_input

    async def _serve(self, peer: Device, term: str | None) -> None:
        name = printable(peer.friendly_name)
        started = time.monotonic()
        try:
            (cols, rows), command, first_input = await self._first_frames()
        except (_Tampered, SessionEnded, RelayClosed) as exc:
            self._log.warning(
                "Session %d with %s ended before it started (%s).", self.number, name, exc
            )
            await self._send_done()
            return
        user = pwd.getpwuid(os.getuid())
        shell = self._config.shell or user.pw_shell or "/bin/sh"
        env = login_environment(os.environ, user, shell, term)
        if command is None:
            argv0, args = "-" + os.path.basename(shell), []
            mode = f"interactive, {cols}x{rows}"
        else:
            argv0, args = shell, ["-c", command]
            mode = f"command {printable(command, 200)!r}"
        cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
        self._log.info("Session %d opened by %s (%s).", self.number, name, mode)
        recorder = None
        if self._config.record_dir is not None:
            try:
                recorder = SessionRecorder(
                    self._config.record_dir,
                    session_number=self.number,
                    cols=cols,
                    rows=rows,
                    title=f"session {self.number} by {name}",
                    env={"TERM": env["TERM"], "SHELL": shell},
                )
            except OSError as exc:
                self._log.error(
                    "Session %d: cannot record (%s); recording skipped.", self.number, exc
                )
        try:
            process = await PtyProcess.spawn(
                shell, args, argv0=argv0, env=env, cwd=cwd, cols=cols, rows=rows
            )
        except OSError as exc:
            self._log.error("Session %d: could not start %s (%s).", self.number, shell, exc)
            with contextlib.suppress(RelayClosed):
                await self._send_frame(encode_exit(127))
            await self._send_done()
            if recorder is not None:
                recorder.close()
            return
        try:
            reason, status = await self._pump(process, peer, first_input, recorder)
        finally:
            await process.terminate()
            if recorder is not None:
                recorder.close()
        self._log.info(
            "Session %d closed (%s, exit %d, %.1f s).",
            self.number,
            reason,
            status,
            time.monotonic() - started,
        )

    async def _pump(
        self,
        process: PtyProcess,
        peer: Device,
        first_input: bytes,
        recorder: SessionRecorder | None,
    ) -> tuple[str, int]:
        """Move bytes until the session ends; returns the reason and the shell's status."""

        async def output() -> None:
            while data := await process.read(DATA_CHUNK_SIZE):
                # Output is activity too: a long `-c` job or a watched `top` is not abandoned.
                self._last_activity = time.monotonic()
                if recorder is not None:
                    recorder.output(data)
                # Shielded: a cancelled pump never leaves a spent counter unsent.
                await asyncio.shield(self._send_frame(encode_data(data)))

        async def input_() -> None:
            if first_input:
                await process.write(first_input)
            while True:
                frame = await self._next_frame(None)
                if frame.type is FrameType.DATA:
                    self._last_activity = time.monotonic()
                    await process.write(frame.payload)
                elif frame.type is FrameType.RESIZE:
                    self._last_activity = time.monotonic()
                    size = frame.terminal_size()
                    process.resize(size.cols, size.rows)
                    if recorder is not None:
                        recorder.resize(size.cols, size.rows)
                elif frame.type is FrameType.PING:
                    await self._send_frame(encode_pong())
                elif frame.type is FrameType.COMMAND:
                    self._log.warning(
                        "Session %d: ignoring a COMMAND after the start (W9).", self.number
                    )

        async def watchdog() -> None:
            next_revocation_check = 0.0
            while True:
                await asyncio.sleep(_WATCHDOG_INTERVAL)
                now = time.monotonic()
                idle = self._config.idle_timeout
                if idle > 0 and now - self._last_activity > idle:
                    raise _Stop("idle timeout")
                if now >= next_revocation_check:
                    next_revocation_check = now + _REVOCATION_CHECK
                    if not self._agent.still_granted(peer):
                        raise _Stop("shell access revoked")

        tasks = {
            asyncio.create_task(output(), name="output"): "output",
            asyncio.create_task(input_(), name="input"): "input",
            asyncio.create_task(watchdog(), name="watchdog"): "watchdog",
            asyncio.create_task(process.wait(), name="exit"): "exit",
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failures = [error for task in done if (error := task.exception()) is not None]
            if not failures:  # the shell exited, or its terminal closed (end of output)
                return await self._finish_normally(process, tasks)
            exc = failures[0]
            if isinstance(exc, _Tampered):
                self._log.warning(
                    "Session %d: a frame failed authentication (%s).", self.number, exc
                )
                await self._send_done()
                return "integrity failure", await process.terminate()
            if isinstance(exc, _Stop):
                status = await process.terminate()
                await self._send_exit(status)
                return str(exc), status
            if isinstance(exc, SessionEnded | RelayClosed):
                reason = exc.reason if isinstance(exc, SessionEnded) else "relay connection lost"
                return f"controller gone: {reason}", await process.terminate()
            raise exc
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _finish_normally(
        self, process: PtyProcess, tasks: dict[asyncio.Task[Any], str]
    ) -> tuple[str, int]:
        """The shell exited: let its output drain, end leftover jobs, then send EXIT."""
        output = next(task for task, name in tasks.items() if name == "output")
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(output), _DRAIN_WAIT)
        output.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await output
        # Anything still buffered after a background job kept the terminal open.
        with contextlib.suppress(RelayClosed):
            while data := process.read_available(DATA_CHUNK_SIZE):
                await self._send_frame(encode_data(data))
        status = await process.terminate()
        await self._send_exit(status)
        return "shell exited", status

    async def _send_exit(self, status: int) -> None:
        with contextlib.suppress(RelayClosed):
            await self._send_frame(encode_exit(status))
        await self._send_done()


class Agent:
    """Keeps one registration with the relay and runs the sessions it is asked for."""

    def __init__(
        self, config: AgentConfig, identity: AgentIdentity, log: logging.Logger | None = None
    ) -> None:
        self.config = config
        self.identity = identity
        self.log = log or logging.getLogger("authmesh.shell.agent")
        self.limited_log = LimitedLog(self.log)
        self.slots = SessionSlots(config.max_sessions, config.max_pending, config.pending_timeout)
        self._sessions: dict[int, asyncio.Task[None]] = {}
        self._session_numbers = 0
        self._legacy_pipe: SessionPipe | None = None
        self._dedicated_sockets = False

    @property
    def active_sessions(self) -> int:
        return self.slots.active

    def still_granted(self, peer: Device) -> bool:
        """Whether ``peer`` still holds the shell grant (checked during sessions, S5)."""
        try:
            entry = self.identity.allow_list().find_by_public_key(peer.public_key)
        except Exception:  # an unreadable or tampered list revokes: fail closed
            return False
        return entry is not None and entry.device_id == peer.device_id and entry.shell_allowed

    async def run(self, stop: asyncio.Event) -> None:
        """Stay registered until ``stop`` is set, then end every session."""
        delay = _BACKOFF_START
        try:
            while not stop.is_set():
                registered = await self._connect_once(stop)
                if stop.is_set():
                    break
                delay = _BACKOFF_START if registered else min(delay * 2, _BACKOFF_MAX)
                wait = delay * _random.uniform(0.8, 1.2)
                self.log.info("Disconnected. Reconnecting in %.1fs...", wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.close_sessions()

    async def close_sessions(self) -> None:
        tasks = list(self._sessions.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_session(self, work: Callable[[int], Any]) -> int:
        """Run ``work`` as a pending session; the oldest pending one may make room."""
        self._session_numbers += 1
        number = self._session_numbers
        evicted = self.slots.request(number, asyncio.get_running_loop().time())
        if evicted is not None:
            self.limited_log.warning(
                "Session %s dropped: %d handshakes were pending; a newer request took its place.",
                evicted,
                self.config.max_pending,
            )
            self._sessions[evicted].cancel()
        task = asyncio.create_task(work(number))
        self._sessions[number] = task

        def finished(_: asyncio.Task[None]) -> None:
            self.slots.release(number)
            self._sessions.pop(number, None)

        task.add_done_callback(finished)
        return number

    async def _connect_once(self, stop: asyncio.Event) -> bool:
        """One socket's life; True if it got registered (the backoff then starts over)."""
        self.log.info("Connecting to relay: %s", self.config.relay_url)
        try:
            socket = await connect(self.config.relay_url)
        except Exception as exc:
            self.log.warning("%s", exc)
            return False
        try:
            if not await self._register(socket):
                return False
            stopper = asyncio.create_task(stop.wait())
            serving = asyncio.create_task(self._serve(socket))
            await asyncio.wait({stopper, serving}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopper, serving):
                task.cancel()
            await asyncio.gather(stopper, serving, return_exceptions=True)
            return True
        finally:
            if self._legacy_pipe is not None:
                self._legacy_pipe.end()
                self._legacy_pipe = None
            await socket.close()

    async def _register(self, socket: RelayConnection) -> bool:
        identity = self.identity
        timeout = self.config.handshake_timeout
        challenged = False
        scheme = ChallengeScheme.V1
        try:
            request: dict[str, Any] = {
                "type": "agent",
                "deviceId": identity.device_id,
                "publicKey": b64encode(identity.signer.public_key),
            }
            if self.config.protocol == PROTOCOL_VERSION:
                request["protocol"] = PROTOCOL_VERSION
            await socket.send(request)
            while True:
                message = await socket.receive(timeout)
                kind = message.get("type")
                if kind == "agent_challenge" and not challenged:
                    challenged = True  # S1: one answer, to the challenge we asked for
                    scheme = (
                        ChallengeScheme.V2
                        if message.get("protocol") == PROTOCOL_VERSION == self.config.protocol
                        else ChallengeScheme.V1
                    )
                    challenge = message.get("challenge")
                    signature = sign_challenge(
                        identity.signer, challenge if isinstance(challenge, str) else "", scheme
                    )
                    await socket.send_text(challenge_response_message(signature))
                elif kind == "agent_registered":
                    self._dedicated_sockets = scheme is ChallengeScheme.V2
                    self.log.info(
                        "Registered with relay (identity verified, %s).",
                        "protocol 2" if self._dedicated_sockets else "legacy relay",
                    )
                    return True
                elif kind == "error":
                    self.log.error(
                        "The relay refused the registration (%s); retrying with backoff.",
                        printable(str(message.get("code")), 40),
                    )
                    return False
        except ChallengeError as exc:
            self.log.error("%s", exc)
        except TimeoutError:
            self.log.error("The relay did not complete the registration within %.0f s.", timeout)
        except RelayClosed:
            self.log.warning("The relay closed the connection during registration.")
        except PairingError as exc:  # a frame that is not a JSON object
            self.log.warning("The relay broke the registration protocol (%s).", exc.code)
        return False

    async def _serve(self, socket: RelayConnection) -> None:
        interval = self.config.heartbeat_interval
        loop = asyncio.get_running_loop()
        last_pong = loop.time()

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(interval)
                if loop.time() - last_pong > 2 * interval:
                    self.log.warning("The relay stopped answering heartbeats; reconnecting.")
                    return
                await socket.send({"type": "ping"})

        beat = asyncio.create_task(heartbeat())
        try:
            while not beat.done():
                receiving = asyncio.create_task(socket.receive(None))
                await asyncio.wait({receiving, beat}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    break
                try:
                    message = receiving.result()
                except RelayClosed:
                    reason = printable(socket.close_reason, 80)
                    self.log.warning("Relay connection closed%s.", f" ({reason})" if reason else "")
                    return
                except PairingError as exc:
                    self.log.warning("The relay broke the protocol (%s); reconnecting.", exc.code)
                    return
                kind = message.get("type")
                if kind == "pong":
                    last_pong = loop.time()
                else:
                    await self._dispatch(socket, kind, message)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, RelayClosed):
                await beat

    async def _dispatch(self, socket: RelayConnection, kind: Any, message: dict[str, Any]) -> None:
        pipe = self._legacy_pipe
        if kind == "shell_request" and self._dedicated_sockets:
            token = message.get("session")
            if isinstance(token, str) and 0 < len(token) <= 128:
                self._accept_dedicated(token)
        elif kind == "peer_found":
            await self._accept_legacy(socket)
        elif kind in ("data", "done") or (
            kind == "error" and message.get("code") in _SESSION_ERRORS
        ):
            if pipe is not None:
                await pipe.deliver(message)
        elif kind == "error":
            self.log.warning("Relay error: %s", printable(str(message.get("code")), 40))
        elif kind == "agent_challenge":
            self.limited_log.warning(
                "Ignoring an unrequested registration challenge from the relay (S1)."
            )

    async def _accept_legacy(self, socket: RelayConnection) -> None:
        """A session on the registration socket (relays without dedicated session sockets)."""
        if self._legacy_pipe is not None:
            # Only a relay that re-binds busy agents does this (the reference, S3): the running
            # session's output would now go to the new requester, so it cannot go on.
            self.log.warning("The relay re-routed the running session; ending it (S3).")
            self._legacy_pipe.end()
            self._legacy_pipe = None
            return
        pipe = SessionPipe(socket)
        self._legacy_pipe = pipe

        async def work(number: int) -> None:
            try:
                await ShellSession(self, pipe, number).run()
            finally:
                pipe.end()
                if self._legacy_pipe is pipe:
                    self._legacy_pipe = None

        self._start_session(work)

    def _accept_dedicated(self, token: str) -> None:
        """Protocol 2: open a socket for this session alone and claim it with ``token``."""

        async def work(number: int) -> None:
            deadline = self.slots.deadline(number) or asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout_at(deadline):
                    socket = await connect(self.config.relay_url)
            except Exception as exc:
                self.limited_log.warning("Session %d: %s", number, exc)
                return
            try:
                async with asyncio.timeout_at(deadline):
                    claimed = await self._claim(socket, token, number)
                if claimed:
                    await ShellSession(self, socket, number).run()
            except (TimeoutError, RelayClosed):
                self.limited_log.warning("Session %d: the relay did not open the session.", number)
            finally:
                await socket.close()

        self._start_session(work)

    async def _claim(self, socket: RelayConnection, token: str, number: int) -> bool:
        """Claim the announced session on ``socket``; False if the relay dropped it."""
        await socket.send({"type": "agent_session", "session": token})
        while True:
            message = await socket.receive(self.config.handshake_timeout)
            if message.get("type") == "peer_found":
                return True
            if message.get("type") == "error":
                self.limited_log.warning(
                    "Session %d: the relay dropped the request (%s).",
                    number,
                    printable(str(message.get("code")), 40),
                )
                return False
