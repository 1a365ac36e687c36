"""The shell agent: stays registered with the relay and serves shells to granted controllers.

Registration (spec shell §1) is the reference's ``agent`` → ``agent_challenge`` →
``agent_challenge_response`` → ``agent_registered`` exchange, with our protocol 2 on top:

* the ``agent`` message carries ``"protocol": 2``; a relay that speaks it answers with
  ``"protocol": 2`` in ``agent_challenge`` and the agent signs the domain-prefixed form
  (:attr:`~authmesh.core.shell._challenge.ChallengeScheme.V2`). Only a challenge without it —
  what a reference relay sends — is answered in the legacy form, and then only if it is a
  UUID (weakness S1). Only the one challenge that follows our own ``agent`` message is signed.
* a protocol-2 relay announces each shell request with ``shell_request`` and a one-time session
  token; the agent opens a dedicated socket for it (``agent_session``), so sessions are
  independent and concurrent and a request can never divert a live session (S3). On a legacy
  relay the registration socket carries one session at a time.
* only authenticated sessions count against ``max_sessions``; handshakes still pending have
  their own small budget and a short deadline
  (:class:`~authmesh.core.shell._admission.SessionSlots`), and the lines such unauthenticated
  requests make the agent log are rate-limited, so requesters that never answer can neither
  lock out a granted controller nor flood the log.
* any registration error is logged and answered by reconnecting with backoff (W7); so is a
  heartbeat without ``pong`` for two intervals. The backoff doubles from 1 s to 30 s, with
  jitter (W11), and resets once registered.

Each session (:class:`~authmesh.shell._agent_session.ShellSession`) ends for any reason —
shell exit, controller gone, ``done``, relay loss, a frame that fails authentication, idle
timeout, revoked grant — with the whole process session killed, so nothing wedges the agent
(W1). Sessions run in one task group and each registration socket's tasks in another, so
stopping the agent awaits every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authmesh.core import AllowList, Device, Signer, device_id
from authmesh.core._b64 import b64encode
from authmesh.core._text import printable
from authmesh.core.shell._admission import (
    DEFAULT_MAX_PENDING,
    DEFAULT_PENDING_TIMEOUT,
    SessionSlots,
)
from authmesh.core.shell._challenge import ChallengeError, ChallengeScheme, sign_challenge
from authmesh.core.shell._wire import challenge_response_message
from authmesh.pairing import PairingError
from authmesh.pairing._relay_client import RelayClosed, RelayConnection
from authmesh.shell._agent_session import ShellSession
from authmesh.shell._channel import SessionPipe, connect
from authmesh.shell._handshake import HANDSHAKE_TIMEOUT
from authmesh.shell._log_limit import LimitedLog

__all__ = [
    "PROTOCOL_VERSION",
    "Agent",
    "AgentConfig",
]

PROTOCOL_VERSION = 2
_BACKOFF_START = 1.0
_BACKOFF_MAX = 30.0
# Relay errors that end the session riding on the registration socket.
_SESSION_ERRORS = frozenset({"peer_disconnected", "session_expired", "session_data_limit"})

_random = secrets.SystemRandom()


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


class _Disconnect(Exception):
    """Raised inside the registration socket's task group: this socket's life is over."""

    def __init__(self, registered: bool) -> None:
        super().__init__("disconnect")
        self.registered = registered


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
        self._session_group: asyncio.TaskGroup | None = None
        self._session_numbers = 0
        self._legacy_pipe: SessionPipe | None = None
        self._dedicated_sockets = False
        self._last_pong = 0.0

    def still_granted(self, peer: Device) -> bool:
        """Whether ``peer`` still holds the shell grant (checked during sessions, S5)."""
        try:
            entry = self.identity.allow_list().find_by_public_key(peer.public_key)
        except Exception:  # an unreadable or tampered list revokes: fail closed
            return False
        return entry is not None and entry.device_id == peer.device_id and entry.shell_allowed

    async def run(self, stop: asyncio.Event) -> None:
        """Stay registered until ``stop`` is set, then end every session.

        Sessions run in one task group, so when this returns every one of them has ended.
        """
        async with asyncio.TaskGroup() as sessions:
            self._session_group = sessions
            try:
                await self._stay_registered(stop)
            finally:
                self._session_group = None
                for task in self._sessions.values():
                    task.cancel()

    async def _stay_registered(self, stop: asyncio.Event) -> None:
        delay = _BACKOFF_START
        while not stop.is_set():
            registered = await self._connect_once(stop)
            if stop.is_set():
                return
            delay = _BACKOFF_START if registered else min(delay * 2, _BACKOFF_MAX)
            wait = delay * _random.uniform(0.8, 1.2)
            self.log.info("Disconnected. Reconnecting in %.1fs...", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def _start_session(self, work: Callable[[int], Coroutine[Any, Any, None]]) -> int:
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
        assert self._session_group is not None
        task = self._session_group.create_task(work(number))
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
        registered = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._until(stop, registered))
                tasks.create_task(self._registration(socket, registered))
        except BaseExceptionGroup as group:
            disconnects, rest = group.split(_Disconnect)
            if rest is not None:
                raise rest from None
            assert disconnects is not None
        finally:
            if self._legacy_pipe is not None:
                self._legacy_pipe.end()
                self._legacy_pipe = None
            await socket.close()
        return registered.is_set()

    @staticmethod
    async def _until(stop: asyncio.Event, registered: asyncio.Event) -> None:
        await stop.wait()
        raise _Disconnect(registered.is_set())

    async def _registration(self, socket: RelayConnection, registered: asyncio.Event) -> None:
        if not await self._register(socket):
            raise _Disconnect(False)
        registered.set()
        self._last_pong = asyncio.get_running_loop().time()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._heartbeat(socket))
            tasks.create_task(self._serve(socket))

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

    async def _heartbeat(self, socket: RelayConnection) -> None:
        """Ping every interval; two intervals without ``pong`` and the socket is given up."""
        interval = self.config.heartbeat_interval
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if loop.time() - self._last_pong > 2 * interval:
                self.log.warning("The relay stopped answering heartbeats; reconnecting.")
                raise _Disconnect(True)
            try:
                await socket.send({"type": "ping"})
            except RelayClosed:
                raise _Disconnect(True) from None

    async def _serve(self, socket: RelayConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await socket.receive(None)
            except RelayClosed:
                reason = printable(socket.close_reason, 80)
                self.log.warning("Relay connection closed%s.", f" ({reason})" if reason else "")
                raise _Disconnect(True) from None
            except PairingError as exc:
                self.log.warning("The relay broke the protocol (%s); reconnecting.", exc.code)
                raise _Disconnect(True) from None
            kind = message.get("type")
            if kind == "pong":
                self._last_pong = loop.time()
            else:
                try:
                    await self._dispatch(socket, kind, message)
                except RelayClosed:
                    raise _Disconnect(True) from None

    async def _dispatch(self, socket: RelayConnection, kind: Any, message: dict[str, Any]) -> None:
        pipe = self._legacy_pipe
        if kind == "shell_request" and self._dedicated_sockets:
            token = message.get("session")
            if isinstance(token, str) and 0 < len(token) <= 128:
                self._accept_dedicated(token)
        elif kind == "peer_found":
            await self._accept_legacy(socket)
        elif kind in ("data", "done") or (kind == "error" and _is_session_error(message)):
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
            except (TimeoutError, PairingError):  # a session task must never fail its group
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


def _is_session_error(message: dict[str, Any]) -> bool:
    """An error ending the legacy session; the relay is untrusted, so ``code`` may be any JSON."""
    code = message.get("code")
    return isinstance(code, str) and code in _SESSION_ERRORS
