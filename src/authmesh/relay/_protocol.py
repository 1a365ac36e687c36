"""The relay protocol as a transport-free state machine: events in, frames out.

:class:`RelayCore` receives ``open``/``receive``/``close``/``tick`` events for numbered
connections and returns the :class:`Send` and :class:`Close` actions the transport must
perform, in order. It never does I/O and takes the current time as an argument, so every rule
can be tested without sockets or sleeping.

Wire behaviour is the reference relay's (spec ``relay.md`` §2-§4, §10 checklist) plus the
pairing-v2/bootstrap contract fields. Deliberate differences fix the weaknesses listed in
``relay.md`` §8/§11; each is marked with its id (W1, W2, ...) where it is implemented.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from authmesh.core import InvalidKeyError, device_id
from authmesh.core._b64 import B64Error, b64decode
from authmesh.core._keys import compress, load_public_key, normalize_low_s, verify
from authmesh.core.shell._challenge import ChallengeScheme, challenge_message
from authmesh.relay._clientip import prefix_key, rate_key
from authmesh.relay._config import RelayConfig
from authmesh.relay._jsonwire import JsonWireError, dump_string, dumps, loads
from authmesh.relay._limits import FailureLimiter
from authmesh.relay._messages import (
    ABSENT,
    Agent,
    AgentChallengeResponse,
    AgentSession,
    BootstrapAck,
    BootstrapAnswer,
    BootstrapInit,
    BootstrapReject,
    BootstrapWatch,
    Connect,
    Data,
    Done,
    Listen,
    Message,
    Ping,
    Refusal,
    Shell,
)

__all__ = [
    "MESSAGE_TYPES",
    "Action",
    "Close",
    "Inbound",
    "MessageType",
    "RelayCore",
    "RelayStats",
    "Route",
    "Send",
    "SharedFact",
    "read",
]

log = logging.getLogger("authmesh.relay")

_SIGNATURE_BYTES = 64
PAIRING = "pairing"
SHELL = "shell"


@dataclass(frozen=True)
class Send:
    """Send ``text`` as one text frame to connection ``conn``."""

    conn: int
    text: str


@dataclass(frozen=True)
class Close:
    """Close connection ``conn`` (after its queued frames) with ``code`` and ``reason``."""

    conn: int
    code: int
    reason: str = ""


Action = Send | Close


@dataclass
class RelayStats:
    """Counters exported on ``/metrics`` (never any code, key, token or device id)."""

    connections_opened: int = 0
    pairings: int = 0
    shell_sessions: int = 0
    bootstrap_forwarded: int = 0
    bytes_forwarded: int = 0
    rate_limited: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)


class SharedFact(NamedTuple):
    """One entry of :attr:`RelayCore.journal`: ``("fail", limiter, client or prefix key)``,
    ``("fail", "global", "")`` for a failed connect from anyone, ``("jti", jti, "")``,
    ``("watch", jti, "")``, ``("agent", device id, "")``, ``("pending", shell token, "")``."""

    kind: str
    name: str
    client: str = ""


@dataclass(slots=True, eq=False)
class _Conn:
    id: int
    key: str  # rate-limit bucket of the client address
    prefix: str | None  # rate-limit bucket of the network around it (IPv4 /24, IPv6 /48)
    last_message: float
    session: _Session | None = None
    challenge: _Challenge | None = None
    agent_id: str | None = None
    pending_shell: str | None = None
    bootstrap_jti: str | None = None
    watching: set[str] | None = None  # created on the first watch: most sockets never watch
    closing: bool = False

    def unwatch(self, jti: str) -> None:
        if self.watching is not None:
            self.watching.discard(jti)

    @property
    def attached(self) -> bool:
        """Whether the socket has relay state that keeps it legitimately quiet."""
        return bool(
            self.session
            or self.challenge
            or self.agent_id
            or self.pending_shell
            or self.bootstrap_jti
            or self.watching
        )


@dataclass(eq=False)
class _Session:
    key: str
    kind: str
    target: _Conn
    controller: _Conn | None
    protocol: int
    expires_at: float
    byte_cap: int
    bytes: int = 0
    failures: int = 0

    def peer_of(self, conn: _Conn) -> _Conn | None:
        return self.controller if conn is self.target else self.target


@dataclass(frozen=True)
class _Challenge:
    device_id: str
    public_key: str
    challenge: str
    protocol: int = 1


@dataclass
class _Agent:
    conn: _Conn
    public_key: bytes
    last_ping: float
    protocol: int = 1
    pending: int = 0


@dataclass
class _PendingShell:
    agent_id: str
    controller: _Conn
    expires_at: float


@dataclass
class _Watch:
    conn: _Conn
    created: float


# The limiters each message type consults (relay instances share these counts). Each one
# counts per client address and, under ``<name>_prefix``, per network prefix.
_PREFIX = "_prefix"

# Shell requests a protocol-2 agent may have outstanding (each holds a token until claimed).
_MAX_PENDING_SHELLS_PER_AGENT = 16


def _frame(**fields: Any) -> str:
    return dumps({k: v for k, v in fields.items() if v is not None})


# Frames without variable parts, serialised once (they are on every pairing's path).
_ACK_SESSION_OPEN = _frame(type="ack", message="session_open")
_PEER_FOUND = _frame(type="peer_found")
_PEER_FOUND_V2 = _frame(type="peer_found", protocol=2)
_DONE = _frame(type="done")
_PONG = _frame(type="pong")
_DATA_WITHOUT_PAYLOAD = _frame(type="data")
_DATA_PREFIX = '{"type":"data","payload":'
_INVALID_MESSAGE = Refusal("invalid_message")
_UNKNOWN_TYPE = Refusal("unknown_type")


def _decode_public_key(text: str) -> bytes:
    """Compressed point from base64 of a compressed or uncompressed SEC1 key."""
    return compress(load_public_key(b64decode(text), allow_uncompressed=True))


class RelayCore:
    """All relay state and rules. Not thread-safe; drive it from one event loop."""

    def __init__(self, config: RelayConfig, *, new_id: Callable[[], str] | None = None) -> None:
        self.config = config
        # Actions produced by the event being handled, handed out (and cleared) when it
        # returns: handlers append here instead of passing a list along.
        self._out: list[Action] = []
        self.stats = RelayStats()
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self._conns: dict[int, _Conn] = {}
        self._per_ip: Counter[str] = Counter()
        self._sessions: dict[str, _Session] = {}
        self._agents: dict[str, _Agent] = {}
        self._pending_shells: dict[str, _PendingShell] = {}
        self._watchers: dict[str, _Watch] = {}
        self._targets: dict[str, _Conn] = {}
        self._consumed: dict[str, float] = {}
        window, keys = config.rate_window, config.max_tracked_ips
        self._limiters: dict[str, FailureLimiter] = {}
        for name, limit in {
            "pairing": config.pairing_failure_limit,
            "listen": config.listen_limit,  # every code opened, not only failures
            "shell": config.shell_failure_limit,
            "shell_request": config.shell_request_limit,  # every request, not only failures
            "watch": config.watch_failure_limit,
            "bootstrap": config.bootstrap_failure_limit,
            "agent": config.agent_failure_limit,
        }.items():
            self._limiters[name] = FailureLimiter(limit, window, keys)
            prefix_limit = limit * config.prefix_limit_factor
            self._limiters[name + _PREFIX] = FailureLimiter(prefix_limit, window, keys)
        self._global_failures = 0
        self._global_resets_at = 0.0
        # State changes other relay instances must learn of; None (the embedded relay)
        # records nothing.
        self.journal: list[SharedFact] | None = None

    # ------------------------------------------------------------------ read-only views

    def health(self, degraded_reason: str | None = None) -> str:
        """The ``/health`` body, byte-identical in shape to the reference's when healthy."""
        if degraded_reason is None:
            head: dict[str, Any] = {"status": "ok"}
        else:
            head = {"status": "degraded", "reason": degraded_reason}
        return dumps({**head, "sessions": len(self._sessions), "agents": len(self._agents)})

    def client_key(self, conn_id: int) -> str | None:
        """The rate-limit key of an open connection."""
        conn = self._conns.get(conn_id)
        return None if conn is None else conn.key

    def shared_reads(self, conn_id: int, inbound: Inbound) -> list[SharedFact]:
        """The shared facts (other relay instances change them) the core consults handling
        ``inbound`` from ``conn_id``: the failure counts of the client's address and network
        prefix for every limiter of the message type, then what its declaration adds
        (``MessageType.reads``). Empty for a refused message or an unknown socket."""
        declared, message = inbound
        conn = self._conns.get(conn_id)
        if conn is None or declared is None or message is None or isinstance(message, Refusal):
            return []
        facts = []
        for limiter in declared.limiters:
            facts.append(SharedFact("fail", limiter, conn.key))
            if conn.prefix is not None:
                facts.append(SharedFact("fail", limiter + _PREFIX, conn.prefix))
        if declared.reads is not None:
            facts += declared.reads(message)
        return facts

    def is_movable(self, conn_id: int) -> bool:
        """Whether an open connection has no state here yet (no session, watch, agent...),
        so another relay instance may take it over."""
        conn = self._conns.get(conn_id)
        return conn is not None and not conn.attached and not conn.closing

    def adopt_failures(self, limiter: str, key: str, count: int, resets_at: float) -> None:
        """Take a failure count shared by all relay instances."""
        self._limiters[limiter].adopt(key, count, resets_at)

    def adopt_global_failures(self, count: int, resets_at: float) -> None:
        """Take the failed-connect count of all instances."""
        self._global_failures, self._global_resets_at = count, resets_at

    def agent_moved(self, agent_id: str) -> list[Action]:
        """The agent registered again on another relay instance: retire it here."""
        agent = self._agents.pop(agent_id, None)
        if agent is not None:
            self._retire(agent)
        return self._take()

    def adopt_consumed(self, jti: str, now: float) -> None:
        """A token id another instance (or this one, before a restart) has consumed."""
        if jti not in self._consumed and len(self._consumed) < self.config.max_consumed_jtis:
            self._consumed[jti] = now + self.config.jti_ttl

    def routing_names(self) -> dict[str, list[str]]:
        """What other instances route here: waiting codes, watched jtis, agents, shell tokens."""
        return {
            "otc": [k for k, s in self._sessions.items() if s.kind == PAIRING],
            "watch": list(self._watchers),
            "agent": list(self._agents),
            "pending": list(self._pending_shells),
        }

    def sizes(self) -> dict[str, int]:
        """Sizes of every map the relay keeps (for metrics and memory tests)."""
        sizes = {
            "connections": len(self._conns),
            "sessions": len(self._sessions),
            "agents": len(self._agents),
            "watchers": len(self._watchers),
            "bootstrap_targets": len(self._targets),
            "consumed_jtis": len(self._consumed),
            "tracked_ips": len(self._per_ip),
        }
        for name, limiter in self._limiters.items():
            sizes[f"limiter_{name}"] = len(limiter)
        return sizes

    # ------------------------------------------------------------------ events

    def open(self, conn_id: int, ip: str, now: float) -> list[Action]:
        """A WebSocket finished its upgrade. Over a cap it is closed with 1013."""
        key = rate_key(ip)
        over_total = len(self._conns) >= self.config.max_connections
        if over_total or self._per_ip[key] >= self.config.max_connections_per_ip:
            self.stats.rejections["too_many_connections"] += 1
            log.debug("connection refused", extra={"event": "too_many_connections"})
            return [Close(conn_id, 1013, "too_many_connections")]
        self._conns[conn_id] = _Conn(conn_id, key, prefix_key(ip), now)
        self._per_ip[key] += 1
        self.stats.connections_opened += 1
        return []

    def receive(
        self,
        conn_id: int,
        message: str | bytes,
        now: float,
        inbound: Inbound | None = None,
    ) -> list[Action]:
        """One complete WebSocket message (text or binary) from ``conn_id``; ``inbound`` is
        the message already read by :func:`read`, when the caller had to read it."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing:
            return []
        conn.last_message = now
        # W1: nothing a client sends may escape this method; every failure is a frame.
        try:
            declared, decoded = read(message) if inbound is None else inbound
            if type(decoded) is Refusal:
                self._error(conn, decoded.code)
            elif decoded is not None and declared is not None:
                declared.handler(self, conn, decoded, now)
        except Exception:
            log.exception("message handler failed", extra={"event": "handler_error"})
            self._error(conn, "invalid_message")
        return self._take()

    def close(self, conn_id: int, now: float) -> list[Action]:
        """The socket is gone (any reason). Tells its session peer and forgets its state."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        conn.closing = True
        self._per_ip[conn.key] -= 1
        if self._per_ip[conn.key] <= 0:
            del self._per_ip[conn.key]
        conn.challenge = None
        self._forget_shell_roles(conn)
        session = conn.session
        if session is not None and self._live(session, now):
            peer = session.peer_of(conn)
            self._end_session(session)
            if peer is not None:
                self._error(peer, "peer_disconnected")
        self._forget_bootstrap_roles(conn)
        return self._take()

    def _forget_shell_roles(self, conn: _Conn) -> None:
        if conn.pending_shell is not None:
            self._drop_pending(conn.pending_shell)
        if conn.agent_id is not None:
            agent = self._agents.get(conn.agent_id)
            if agent is not None and agent.conn is conn:
                del self._agents[conn.agent_id]

    def _forget_bootstrap_roles(self, conn: _Conn) -> None:
        # W3: a target leaving does not remove the controller's watch (only its own mapping).
        if conn.bootstrap_jti is not None and self._targets.get(conn.bootstrap_jti) is conn:
            del self._targets[conn.bootstrap_jti]
        # W15: every watch the socket owned goes, not just the first one.
        for jti in conn.watching or ():
            watch = self._watchers.get(jti)
            if watch is not None and watch.conn is conn:
                del self._watchers[jti]
        conn.watching = None

    def tick(self, now: float) -> list[Action]:
        """Periodic sweep: expiries, heartbeats, idle sockets, limiter windows."""
        for session in [s for s in self._sessions.values() if now >= s.expires_at]:
            self._expire(session)
        for jti in [
            j for j, w in self._watchers.items() if now - w.created > self.config.watcher_ttl
        ]:
            watch = self._watchers.pop(jti)
            watch.conn.unwatch(jti)
        while self._consumed:
            jti, expires = next(iter(self._consumed.items()))
            if expires > now:
                break
            del self._consumed[jti]
        for token in [t for t, p in self._pending_shells.items() if now >= p.expires_at]:
            self._drop_pending(token)
        timeout = self.config.agent_heartbeat_timeout
        for agent_id in [a for a, g in self._agents.items() if now - g.last_ping > timeout]:
            # Unregistered, not closed (reference behaviour): a late ping does not re-register.
            del self._agents[agent_id]
        for conn in self._conns.values():
            idle = now - conn.last_message > self.config.idle_timeout
            if idle and not conn.attached and not conn.closing:
                conn.closing = True
                self.stats.rejections["idle_timeout"] += 1
                self._out.append(Close(conn.id, 1000, "idle_timeout"))
        for limiter in self._limiters.values():
            limiter.purge(now)
        return self._take()

    def shutdown(self) -> list[Action]:
        """Close every socket with 1001 ``going_away`` (W18) and drop all state."""
        self._out += [Close(c.id, 1001, "going_away") for c in self._conns.values()]
        for conn in self._conns.values():
            conn.closing = True
        self._sessions.clear()
        self._agents.clear()
        self._watchers.clear()
        self._targets.clear()
        return self._take()

    # ------------------------------------------------------------------ helpers

    def _take(self) -> list[Action]:
        """The actions of the event just handled (the pending output is then empty)."""
        out, self._out = self._out, []
        return out

    def _send(self, conn: _Conn, text: str) -> None:
        if not conn.closing:
            self._out.append(Send(conn.id, text))

    def _error(self, conn: _Conn, code: str, **extra: Any) -> None:
        self.stats.rejections[code] += 1
        self._send(conn, _frame(type="error", code=code, **extra))

    def _close(self, conn: _Conn, code: int = 1000, reason: str = "") -> None:
        if not conn.closing:
            conn.closing = True
            self._out.append(Close(conn.id, code, reason))

    def _limited(self, limiter: str, conn: _Conn, now: float) -> bool:
        """Whether the client's address or its network prefix used up ``limiter``."""
        if self._limiters[limiter].blocked(conn.key, now) or (
            conn.prefix is not None and self._limiters[limiter + _PREFIX].blocked(conn.prefix, now)
        ):
            self.stats.rate_limited[limiter] += 1
            log.debug("rate limited", extra={"event": "rate_limited", "limiter": limiter})
            return True
        return False

    def _fail(self, limiter: str, conn: _Conn, now: float) -> None:
        """Count one failure (or attempt) against the client's address and network prefix."""
        self._limiters[limiter].fail(conn.key, now)
        self._record("fail", limiter, conn.key)
        if conn.prefix is not None:
            self._limiters[limiter + _PREFIX].fail(conn.prefix, now)
            self._record("fail", limiter + _PREFIX, conn.prefix)

    def _has_failed(self, limiter: str, conn: _Conn, now: float) -> bool:
        """Whether the client's address or network prefix failed at all in this window."""
        return self._limiters[limiter].failures(conn.key, now) > 0 or (
            conn.prefix is not None
            and self._limiters[limiter + _PREFIX].failures(conn.prefix, now) > 0
        )

    def _record(self, kind: str, name: str, client: str = "") -> None:
        if self.journal is not None:
            self.journal.append(SharedFact(kind, name, client))

    def _live(self, session: _Session, now: float) -> bool:
        """Whether ``session`` is still current; an expired one is ended with notice (W9)."""
        if self._sessions.get(session.key) is not session:
            return False
        if now >= session.expires_at:
            self._expire(session)
            return False
        return True

    def _lookup(self, key: str, now: float) -> _Session | None:
        session = self._sessions.get(key)
        return session if session is not None and self._live(session, now) else None

    def _end_session(self, session: _Session) -> None:
        """Remove ``session`` and unbind both sockets (W2: no stale bindings)."""
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        for conn in (session.target, session.controller):
            if conn is not None and conn.session is session:
                conn.session = None

    @staticmethod
    def _is_agent_socket(conn: _Conn) -> bool:
        """A socket that registered as an agent (its control socket, even if unregistered)."""
        return conn.agent_id is not None

    def _finish_for(self, conn: _Conn | None, code: str) -> None:
        """Tell one side its session ended; close it unless it is an agent's control socket."""
        if conn is None:
            return
        self._error(conn, code)
        # W7: the agent's registration socket outlives every shell session.
        if not self._is_agent_socket(conn):
            self._close(conn)

    def _expire(self, session: _Session) -> None:
        """Session lifetime (pairing) or idle time (shell) is over: both peers are told (W9)."""
        self._end_session(session)
        self._finish_for(session.target, "session_expired")
        self._finish_for(session.controller, "session_expired")

    def _burn(self, session: _Session) -> None:
        """A live code used up its failure budget (W6): it is dead for everyone."""
        self._end_session(session)
        self.stats.rejections["otc_burned_sessions"] += 1
        log.info("pairing code burned", extra={"event": "otc_burned"})
        self._finish_for(session.target, "otc_burned")
        self._finish_for(session.controller, "otc_burned")

    def _global_failure(self, now: float) -> None:
        """Count a failed connect from anyone (guessing spread over many addresses)."""
        if now >= self._global_resets_at:
            self._global_failures = 0
            self._global_resets_at = now + self.config.rate_window
        self._global_failures += 1
        self._record("fail", "global")
        if self._global_failures == self.config.global_failure_budget:
            log.warning("global pairing failure budget used up", extra={"event": "lockdown"})

    def _under_attack(self, now: float) -> bool:
        """Whether failed connects from everyone used up the global budget this window.

        H1: the budget slows guessing down instead of burning the codes waiting and
        refusing everyone; while it is used up, only addresses (and prefixes) that have not
        failed in their window may connect, so each guessing address gets one guess.
        """
        return (
            now < self._global_resets_at
            and self._global_failures >= self.config.global_failure_budget
        )

    def _capacity(self, now: float) -> bool:
        if len(self._sessions) < self.config.max_sessions:
            return True
        for session in [s for s in self._sessions.values() if now >= s.expires_at]:
            self._expire(session)
        return len(self._sessions) < self.config.max_sessions

    # ------------------------------------------------------------------ pairing

    def _in_session(self, conn: _Conn) -> bool:
        """W2: one session per socket; covers listening twice and connecting to itself."""
        if conn.session is not None:
            self._error(conn, "already_in_session")
            return True
        return False

    def _code_failure(self, session: _Session) -> None:
        session.failures += 1
        if session.failures >= self.config.otc_failure_budget:
            self._burn(session)

    def _listen(self, conn: _Conn, message: Listen, now: float) -> None:
        if self._in_session(conn):
            return
        otc, protocol = message.otc, message.protocol
        # H2: every code opened counts, so probing for live codes (listen, then done
        # or close) costs the prober as much as a hit does. Failed connects from the same
        # address do not stop it from opening codes (H4: a NAT shares one address).
        if self._limited("listen", conn, now):
            self._error(conn, "rate_limited")
            return
        self._fail("listen", conn, now)
        existing = self._lookup(otc, now)
        if existing is not None:
            # Probing for live codes is a failure for the prober and for the code (W6).
            self._fail("pairing", conn, now)
            self._error(conn, "otc_in_use")
            self._code_failure(existing)
            return
        if not self._capacity(now):
            self._error(conn, "relay_capacity")
            return
        session = _Session(
            otc,
            PAIRING,
            conn,
            None,
            protocol,
            # Pairing v2 stays open until the target's operator has typed the SAS.
            now + (self.config.sas_pairing_ttl if protocol == 2 else self.config.pairing_ttl),
            self.config.pairing_session_bytes,
        )
        self._sessions[otc] = session
        conn.session = session
        self._send(conn, _ACK_SESSION_OPEN)

    def _connect(self, conn: _Conn, message: Connect, now: float) -> None:
        if self._in_session(conn):
            return
        otc, protocol = message.otc, message.protocol
        if self._limited("pairing", conn, now):
            self._error(conn, "rate_limited")
            return
        if self._under_attack(now) and self._has_failed("pairing", conn, now):
            self.stats.rate_limited["global"] += 1
            self._error(conn, "rate_limited")
            return
        session = self._lookup(otc, now)
        if session is None or session.kind != PAIRING:
            self._fail("pairing", conn, now)
            self._error(conn, "otc_not_found")
            self._global_failure(now)
            return
        if session.controller is not None:
            self._fail("pairing", conn, now)
            self._error(conn, "peer_already_connected")
            self._code_failure(session)
            return
        if protocol != session.protocol:
            # H5: both sides learn which protocol the other announced (the waiting side
            # must not wait until its code expires); the code is over, nothing is counted.
            self._error(conn, "protocol_mismatch", protocol=session.protocol)
            self._end_session(session)
            self._error(session.target, "protocol_mismatch", protocol=protocol)
            self._close(session.target)
            return
        session.controller = conn
        conn.session = session
        self.stats.pairings += 1
        found = _PEER_FOUND_V2 if protocol == 2 else _PEER_FOUND
        self._send(session.target, found)
        self._send(conn, found)

    def _data(self, conn: _Conn, message: Data, now: float) -> None:
        session = conn.session
        # W13: data outside a paired session is dropped silently, as the reference does.
        if session is None or not self._live(session, now):
            return
        peer = session.peer_of(conn)
        if peer is None:
            return
        size = message.size
        session.bytes += size
        if session.bytes > session.byte_cap:
            # W10: per-session volume cap (pairing small, shell larger; both configurable).
            self._end_session(session)
            self._error(conn, "session_data_limit")
            if not self._is_agent_socket(conn):
                self._close(conn)
            self._finish_for(peer, "peer_disconnected")
            return
        if session.kind == SHELL:
            session.expires_at = now + self.config.shell_idle_timeout
        self.stats.bytes_forwarded += size
        # Only type and payload are forwarded; an absent payload stays absent, null stays null.
        payload = message.payload
        if payload is ABSENT:
            forwarded = _DATA_WITHOUT_PAYLOAD
        elif type(payload) is str:  # the usual case: no generic serialiser needed
            forwarded = _DATA_PREFIX + dump_string(payload) + "}"
        else:
            forwarded = dumps({"type": "data", "payload": payload})
        self._send(peer, forwarded)

    def _done(self, conn: _Conn, message: Done, now: float) -> None:
        session = conn.session
        if session is None or not self._live(session, now):
            return
        peer = session.peer_of(conn)
        self._end_session(session)
        if peer is not None:
            self._send(peer, _DONE)

    # ------------------------------------------------------------------ bootstrap

    def _bootstrap_watch(self, conn: _Conn, message: BootstrapWatch, now: float) -> None:
        jti = message.jti
        if self._limited("watch", conn, now):
            self._error(conn, "rate_limited")
            return
        watch = self._watchers.get(jti)
        if watch is not None and watch.conn is not conn and not watch.conn.closing:
            self._fail("watch", conn, now)
            self._error(conn, "jti_already_watched")
            return
        if conn.watching is None:
            conn.watching = set()
        if jti not in conn.watching:
            # W15: bounded watches per socket; a re-watch does not extend the lifetime.
            if len(conn.watching) >= self.config.max_watches_per_socket:
                self._fail("watch", conn, now)
                self._error(conn, "too_many_watches")
                return
            self._watchers[jti] = _Watch(conn, now)
            conn.watching.add(jti)
            self._record("watch", jti)
        self._send(conn, _frame(type="bootstrap_watching", jti=jti))

    def _bootstrap_reject_to(self, conn: _Conn, error: str, now: float) -> None:
        # Checklist 11: a bootstrap target only understands bootstrap_reject, never error.
        self._fail("bootstrap", conn, now)
        self.stats.rejections[error] += 1
        self._send(conn, _frame(type="bootstrap_reject", error=error))

    def _bootstrap_init(self, conn: _Conn, message: BootstrapInit, now: float) -> None:
        # W3: bootstrap_init is rate limited too, answered in the SDK's own vocabulary.
        if self._limited("bootstrap", conn, now):
            self.stats.rejections["rate_limited"] += 1
            self._send(conn, _frame(type="bootstrap_reject", error="rate_limited"))
            return
        if message.refusal is not None:  # no_watcher: nobody can watch such a jti
            self._bootstrap_reject_to(conn, message.refusal, now)
            return
        jti = message.jti
        expires = self._consumed.get(jti)
        if expires is not None and expires > now:
            self._bootstrap_reject_to(conn, "token_already_used", now)
            return
        watch = self._watchers.get(jti)
        if watch is None or watch.conn.closing:
            self._bootstrap_reject_to(conn, "no_watcher", now)
            return
        self._consumed.pop(jti, None)
        if len(self._consumed) >= self.config.max_consumed_jtis:
            self.stats.rejections["relay_overloaded"] += 1
            self._send(conn, _frame(type="bootstrap_reject", error="relay_overloaded"))
            return
        self._consumed[jti] = now + self.config.jti_ttl
        self._record("jti", jti)
        if conn.bootstrap_jti is not None and self._targets.get(conn.bootstrap_jti) is conn:
            del self._targets[conn.bootstrap_jti]
        conn.bootstrap_jti = jti
        self._targets[jti] = conn
        self.stats.bootstrap_forwarded += 1
        init = _frame(
            type="bootstrap_init",
            jti=jti,
            token=message.token,
            targetPubKey=message.target_pub_key,
            targetSig=message.target_sig,
            protocol=message.protocol,
        )
        self._send(watch.conn, init)

    def _bootstrap_answer(self, conn: _Conn, message: BootstrapAnswer, now: float) -> None:
        jti = message.jti
        watch = self._watchers.get(jti)
        # W3: only the socket that watches this jti may answer for it.
        if watch is None or watch.conn is not conn:
            self._error(conn, "not_watcher")
            return
        if message.malformed:
            self._error(conn, "invalid_message")
            return
        del self._watchers[jti]
        conn.unwatch(jti)
        # W4: controllerSig (and the reject reason) reach the target.
        frame = _frame(
            type=message.TYPE,
            jti=jti,
            controllerPubKey=message.controller_pub_key,
            controllerSig=message.controller_sig,
            error=message.error,
        )
        target = self._targets.pop(jti, None)
        if target is not None:
            target.bootstrap_jti = None
            self._send(target, frame)

    # ------------------------------------------------------------------ agents and shell

    def _agent(self, conn: _Conn, message: Agent, now: float) -> None:
        agent_id, public_key, protocol = message.device_id, message.public_key, message.protocol
        if self._limited("agent", conn, now):
            self._error(conn, "rate_limited")
            return
        challenge = self._new_id()
        conn.challenge = _Challenge(agent_id, public_key, challenge, protocol)
        found = _frame(
            type="agent_challenge", challenge=challenge, protocol=2 if protocol == 2 else None
        )
        self._send(conn, found)

    def _agent_challenge_response(
        self, conn: _Conn, message: AgentChallengeResponse, now: float
    ) -> None:
        pending, conn.challenge = conn.challenge, None
        if pending is None:
            self._error(conn, "no_pending_challenge")
            return
        if not message.given:
            self._error(conn, "missing_signature")
            return
        signature = message.signature
        try:
            if signature is None:
                raise InvalidKeyError("the signature is not base64")
            public_key = _decode_public_key(pending.public_key)
        except (B64Error, InvalidKeyError):
            self._fail("agent", conn, now)
            self._error(conn, "invalid_signature")
            return
        # W5: the device id must be the one derived from the key being proven. Both are
        # public, so a plain comparison (compare_digest refuses non-ASCII text).
        if device_id(public_key) != pending.device_id:
            self._fail("agent", conn, now)
            self._error(conn, "invalid_device_id")
            return
        # W20: high-S signatures are normalised before verifying (TPM keys produce them).
        scheme = ChallengeScheme.V2 if pending.protocol == 2 else ChallengeScheme.V1
        signed = challenge_message(pending.challenge, scheme, agent_device_id=pending.device_id)
        valid = len(signature) == _SIGNATURE_BYTES and verify(
            public_key, normalize_low_s(signature), signed
        )
        if not valid:
            self._fail("agent", conn, now)
            self._error(conn, "invalid_signature")
            return
        existing = self._agents.get(pending.device_id)
        if existing is not None and existing.conn is not conn:
            self._retire(existing)
        if conn.agent_id is not None and conn.agent_id != pending.device_id:
            previous = self._agents.get(conn.agent_id)
            if previous is not None and previous.conn is conn:
                del self._agents[conn.agent_id]
        self._agents[pending.device_id] = _Agent(conn, public_key, now, pending.protocol)
        conn.agent_id = pending.device_id
        self._record("agent", pending.device_id)
        self._send(conn, _frame(type="agent_registered"))

    def _retire(self, agent: _Agent) -> None:
        """The agent registered again on another socket: the old one is closed (wire)."""
        agent.conn.agent_id = None
        self._close(agent.conn, 1000, "replaced")

    def _ping(self, conn: _Conn, message: Ping, now: float) -> None:
        if conn.agent_id is not None:
            agent = self._agents.get(conn.agent_id)
            if agent is not None and agent.conn is conn:
                agent.last_ping = now
        self._send(conn, _PONG)

    def _matching_agent(self, conn: _Conn, agent_id: str, public_key: str) -> _Agent | None:
        """The live agent registered as ``agent_id`` with ``public_key``, if any."""
        agent = self._agents.get(agent_id)
        if agent is None or agent.conn.closing or agent.conn is conn:
            return None
        try:
            requested = _decode_public_key(public_key)
        except (B64Error, InvalidKeyError):
            requested = b""
        # W5: keys are compared decoded, so another encoding of the same key matches.
        return agent if hmac.compare_digest(requested, agent.public_key) else None

    def _shell(self, conn: _Conn, message: Shell, now: float) -> None:
        agent_id, public_key = message.device_id, message.public_key
        if conn.session is not None or conn.pending_shell is not None:
            self._error(conn, "already_in_session")
            return
        if self._limited("shell", conn, now) or self._limited("shell_request", conn, now):
            self._error(conn, "rate_limited")
            return
        # H3: every request counts, answered or not; unauthenticated requests reach
        # the agent, which must not be flooded by one address.
        self._fail("shell_request", conn, now)
        agent = self._matching_agent(conn, agent_id, public_key)
        matched = agent is not None
        if matched and agent is not None and agent.protocol == 2:
            # Protocol 2: the agent opens a socket for this session alone (S3); the
            # registration socket is never bound. The requester gets the uniform reply now.
            self._send(conn, _PEER_FOUND)
            if agent.pending >= _MAX_PENDING_SHELLS_PER_AGENT:
                return
            token = self._new_id()
            self._pending_shells[token] = _PendingShell(
                agent_id, conn, now + self.config.handshake_timeout
            )
            agent.pending += 1
            conn.pending_shell = token
            self._record("pending", token)
            self._send(agent.conn, _frame(type="shell_request", session=token))
            return
        # W7: a busy agent is never re-bound; the requester gets the uniform reply.
        if not matched or agent is None or agent.conn.session is not None:
            self._fail("shell", conn, now)
            self._send(conn, _PEER_FOUND)
            return
        if not self._capacity(now):
            self._send(conn, _PEER_FOUND)
            return
        key = f"shell_{int(now * 1000)}_{self._new_id()}"
        session = _Session(
            key,
            SHELL,
            agent.conn,
            conn,
            1,
            now + self.config.shell_idle_timeout,
            self.config.shell_session_bytes,
        )
        self._sessions[key] = session
        agent.conn.session = session
        conn.session = session
        self.stats.shell_sessions += 1
        self._send(agent.conn, _PEER_FOUND)
        self._send(conn, _PEER_FOUND)

    def _drop_pending(self, token: str) -> _PendingShell | None:
        pending = self._pending_shells.pop(token, None)
        if pending is None:
            return None
        if pending.controller.pending_shell == token:
            pending.controller.pending_shell = None
        agent = self._agents.get(pending.agent_id)
        if agent is not None and agent.pending > 0:
            agent.pending -= 1
        return pending

    def _agent_session(self, conn: _Conn, message: AgentSession, now: float) -> None:
        """Protocol 2: an agent's dedicated socket claims the session announced by token."""
        token = message.token
        if conn.session is not None or conn.agent_id is not None:
            self._error(conn, "already_in_session")
            return
        if self._limited("agent", conn, now):
            self._error(conn, "rate_limited")
            return
        pending = self._drop_pending(token) if token is not None else None
        controller = pending.controller if pending is not None else None
        if (
            pending is None
            or controller is None
            or controller.closing
            or controller.session is not None
            or now >= pending.expires_at
        ):
            self._fail("agent", conn, now)
            self._error(conn, "no_pending_session")
            self._close(conn)
            return
        if not self._capacity(now):
            self._error(conn, "relay_capacity")
            self._close(conn)
            return
        key = f"shell_{int(now * 1000)}_{self._new_id()}"
        session = _Session(
            key,
            SHELL,
            conn,
            controller,
            2,
            now + self.config.shell_idle_timeout,
            self.config.shell_session_bytes,
        )
        self._sessions[key] = session
        conn.session = session
        controller.session = session
        self.stats.shell_sessions += 1
        self._send(conn, _PEER_FOUND)


# ---------------------------------------------------------------------- message types


@dataclass(frozen=True)
class Route:
    """How relay instances find the one owning a message's subject (``cluster.py``): the
    route kind, the attribute of the typed message naming the subject, and whether the
    message claims it."""

    kind: str
    subject: str
    claims: bool


M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class MessageType(Generic[M]):
    """Everything the relay knows about one message type, in one place.

    ``message`` is its typed message (``messages.py``), whose ``decode`` reads the parsed
    frame; ``handler`` is the core's rule for it; ``limiters`` are the failure limiters it
    consults (counts shared by relay instances) and ``reads`` the other shared facts it needs
    known before it is handled; ``route`` is how a cluster finds the instance owning its
    subject; ``needs_redis``: it is refused while a cluster has lost Redis (it creates state
    other instances must find); ``refusal`` is the frame a refused message gets (a bootstrap
    target understands only ``bootstrap_reject``).
    """

    message: type[M]
    handler: Callable[[RelayCore, _Conn, M, float], None]
    limiters: tuple[str, ...] = ()
    reads: Callable[[M], list[SharedFact]] | None = None
    route: Route | None = None
    needs_redis: bool = False
    refusal: Callable[[str], str] = field(default=lambda code: _frame(type="error", code=code))
    name: str = field(init=False)
    decode: Callable[[dict[str, Any], int], M | Refusal | None] = field(init=False)

    def __post_init__(self) -> None:
        # Read once: ``decode`` is called for every frame.
        object.__setattr__(self, "name", self.message.TYPE)
        object.__setattr__(self, "decode", self.message.decode)


# A frame read at the boundary: its declared type (None when unknown or not a JSON object)
# and its typed message, the refusal it gets, or None when it is dropped unanswered.
Inbound = tuple[MessageType[Any] | None, Any]


def read(message: str | bytes) -> Inbound:
    """Read one WebSocket message (a binary one is decoded with replacement characters)."""
    if isinstance(message, bytes):
        size = len(message)
        text = message.decode("utf-8", "replace")
    else:
        text = message
        # isascii() is a flag of the string: no encoding for the usual frame.
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    try:
        value = loads(text)
    except JsonWireError:
        return None, _INVALID_MESSAGE
    kind = value.get("type") if isinstance(value, dict) else None
    declared = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if declared is None:
        return None, _UNKNOWN_TYPE
    return declared, declared.decode(value, size)


def _failed_connects(message: Connect) -> list[SharedFact]:
    return [SharedFact("fail", "global")]  # W6's global budget (H1)


def _consumed_jti(message: BootstrapInit) -> list[SharedFact]:
    return [SharedFact("jti", message.jti)] if message.refusal is None else []


def _bootstrap_refusal(code: str) -> str:
    return _frame(type="bootstrap_reject", error=code)


# Not annotated, so that mypy checks each handler against its declaration's message class.
_DECLARED = (
    MessageType(
        Listen,
        RelayCore._listen,
        ("listen",),
        route=Route("otc", "otc", claims=True),
        needs_redis=True,
    ),
    MessageType(
        Connect,
        RelayCore._connect,
        ("pairing",),
        reads=_failed_connects,
        route=Route("otc", "otc", claims=False),
        needs_redis=True,
    ),
    MessageType(Data, RelayCore._data),
    MessageType(Done, RelayCore._done),
    MessageType(
        BootstrapWatch,
        RelayCore._bootstrap_watch,
        ("watch",),
        route=Route("watch", "jti", claims=True),
        needs_redis=True,
    ),
    MessageType(
        BootstrapInit,
        RelayCore._bootstrap_init,
        ("bootstrap",),
        reads=_consumed_jti,
        route=Route("watch", "jti", claims=False),
        needs_redis=True,
        refusal=_bootstrap_refusal,
    ),
    MessageType(BootstrapAck, RelayCore._bootstrap_answer),
    MessageType(BootstrapReject, RelayCore._bootstrap_answer),
    MessageType(Agent, RelayCore._agent, ("agent",), needs_redis=True),
    MessageType(
        AgentChallengeResponse,
        RelayCore._agent_challenge_response,
        ("agent",),
    ),
    MessageType(
        Shell,
        RelayCore._shell,
        ("shell", "shell_request"),
        route=Route("agent", "device_id", claims=False),
        needs_redis=True,
    ),
    MessageType(
        AgentSession,
        RelayCore._agent_session,
        ("agent",),
        route=Route("pending", "token", claims=False),
        needs_redis=True,
    ),
    MessageType(Ping, RelayCore._ping),
)
MESSAGE_TYPES: dict[str, MessageType[Any]] = {declared.name: declared for declared in _DECLARED}
