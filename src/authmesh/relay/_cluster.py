"""Several relay instances sharing state through Redis (``AMESH_REDIS_URL``).

Each instance keeps running its own :class:`RelayCore`; Redis decides which core a socket's
messages go to, so the state machine and every rule stay exactly those of a single relay:

- **Owners.** A pairing code belongs to the instance where ``listen`` arrived (``SET NX``),
  a watched token id to the watcher's instance, an agent to the instance it registered on,
  a protocol-2 shell token to the agent's instance. Routing keys hold SHA-256 digests of
  codes and ids, never the values, and outlive their state harmlessly: an owner that no
  longer has the session answers exactly as a single relay would (``otc_not_found``...).
- **Forwarding.** A socket whose first stateful message names something another instance
  owns is handed to that instance: its messages travel there over Redis pub/sub (one channel
  per instance, one publisher per instance, so order is kept) and the owner's frames travel
  back. The socket stays with that instance for its lifetime.
- **Shared facts.** Consumed token ids (``SET NX`` with the jti lifetime, so a replay is
  refused on every instance and after restarts) and failure counters (atomic Lua
  ``INCR`` + ``PEXPIRE``). Counts are read just before a message is handled and written right
  after, so instances can overshoot a limit by at most one in-flight message each.
- **Liveness.** Each instance refreshes its heartbeat every sweep; an instance silent for
  ``instance_ttl`` is dead to the others: sockets forwarded to it are told
  ``peer_disconnected`` and closed, its sockets' state is dropped, its codes can be reused.
- **Redis lost.** ``/health`` answers 503 ``degraded``; anything that needs Redis is refused
  with ``relay_unavailable``; forwarded sockets are closed; sessions held entirely by this
  instance go on. Redis is retried every second and everything resumes when it answers.

Caps (connections, sessions) stay per instance; failure counters per address, per network
prefix and the global failed-connect count are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from authmesh.relay._config import ClusterUnavailable, RelayConfig, redacted_url
from authmesh.relay._envelopes import (
    AgentMoved,
    Closed,
    Envelope,
    EnvelopeError,
    Frame,
    HandOver,
    Message,
    Shut,
    bundle,
    decode,
    encode,
    unbundle,
)
from authmesh.relay._jsonwire import dumps
from authmesh.relay._messages import Refusal
from authmesh.relay._protocol import (
    Action,
    Close,
    Inbound,
    RelayCore,
    Route,
    Send,
    SharedFact,
    read,
)
from authmesh.relay._redislink import RedisLink
from authmesh.relay._tasks import cancel_and_wait

__all__ = ["DEGRADED_REASON", "RedisCluster"]

log = logging.getLogger("authmesh.relay")

DEGRADED_REASON = "redis_unavailable"
_PREFIX = "amesh:"
_INSTANCES = _PREFIX + "instances"
_REDIS_TIMEOUT = 2.0
_RECOVERY_INTERVAL = 1.0
# Envelopes waiting for the publisher; a reader waits when it is full.
_OUTBOX_LIMIT = 10_000
_PUBLISH_BATCH = 256
_AGENT_ROUTE_TTL = 24 * 3600.0
_MAX_NAME_CHARS = 256
_UNAVAILABLE = dumps({"type": "error", "code": "relay_unavailable"})
_PEER_GONE = dumps({"type": "error", "code": "peer_disconnected"})

# Scripts run in pipelines are sent with EVAL (Redis caches them by digest), which saves the
# SCRIPT EXISTS round trip redis-py makes before every pipeline holding registered scripts.
# Heartbeat: scores are expiry times in Redis's clock, so instance clocks never matter.
_HEARTBEAT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 3600000)
return redis.call('ZRANGEBYSCORE', KEYS[1], ms, '+inf')
"""
# The live owner of a route ('' for none); with ARGV[3] == '1' claim it when it has none (or
# a dead one), and keep a live owner's route for another ARGV[2] ms. Then the value and PTTL
# of KEYS[3..], the facts the message needs if it is handled here (saves a round trip).
_OWNER = """
local owner = redis.call('GET', KEYS[1])
if owner then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local expires = redis.call('ZSCORE', KEYS[2], owner)
  if owner == ARGV[1] or (expires and tonumber(expires) >= ms) then
    if ARGV[3] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  else
    owner = false
  end
end
if not owner and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  owner = ARGV[1]
end
local reply = {owner or ''}
for i = 3, #KEYS do
  reply[#reply + 1] = redis.call('GET', KEYS[i]) or ''
  reply[#reply + 1] = redis.call('PTTL', KEYS[i])
end
return reply
"""
# Point a route here and return its previous owner (SET ... GET needs Redis 6.2).
_TAKE = """
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return previous
"""
_FAIL = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _route_key(kind: str, name: str) -> str:
    return f"{_PREFIX}route:{kind}:{_digest(name)}"


def _jti_key(jti: str) -> str:
    return f"{_PREFIX}jti:{_digest(jti)}"


def _failures_key(limiter: str, client: str) -> str:
    return f"{_PREFIX}fail:{limiter}:{client}"


def _fact_key(fact: SharedFact) -> str:
    """Where Redis keeps a failure count (``fail``) or a consumed token id (``jti``)."""
    return _jti_key(fact.name) if fact.kind == "jti" else _failures_key(fact.name, fact.client)


def _channel(instance: str) -> str:
    return f"{_PREFIX}instance:{instance}"


Deliver = Callable[[list[Action]], Any]


class RedisCluster:
    """This instance's side of the cluster. ``deliver`` performs core actions on local
    sockets (the server's ``_apply``); actions for sockets of other instances come back here
    through :meth:`deliver_remote`."""

    def __init__(
        self, config: RelayConfig, core: RelayCore, deliver: Deliver, new_conn_id: Callable[[], int]
    ) -> None:
        self.config = config
        self.core = core
        self.instance = uuid.uuid4().hex[:16]
        self.degraded: str | None = None
        self.redis_losses = 0
        self._deliver = deliver
        self._new_conn_id = new_conn_id
        try:
            self._redis = redis.Redis.from_url(
                config.redis_url,
                decode_responses=True,
                socket_timeout=_REDIS_TIMEOUT,
                socket_connect_timeout=_REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:  # a redis_url passed in code skips the settings' check
            raise ClusterUnavailable(
                f"{redacted_url(config.redis_url)} is not a Redis URL ({exc}); pass "
                "redis://host:port/db, rediss://... or unix:///path."
            ) from None
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        # How long each kind of route outlives its last claim, in ms.
        self._route_ms = {
            "otc": self._ms(max(config.pairing_ttl, config.sas_pairing_ttl)),
            "watch": self._ms(config.watcher_ttl),
            "agent": self._ms(_AGENT_ROUTE_TTL),
            "pending": self._ms(config.handshake_timeout),
        }
        self._homes: dict[int, str] = {}  # local socket -> instance that handles it
        self._guests: dict[str, int] = {}  # "instance:socket" handled here -> core conn id
        self._origins: dict[int, tuple[str, int]] = {}  # core conn id -> (instance, socket)
        # Facts read by the instance that handed a socket over, for its first message here.
        self._handed_facts: dict[int, list[Any]] = {}
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(_OUTBOX_LIMIT)
        self._overflowed: set[str] = set()  # instances whose envelopes overflowed the outbox
        self._tasks: set[asyncio.Task[None]] = set()
        self._link: RedisLink | None = None
        self._recovery: asyncio.Task[None] | None = None
        core.journal = []

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Reach Redis, announce this instance, subscribe; :class:`ClusterUnavailable` if not."""
        try:
            async with asyncio.timeout(2 * _REDIS_TIMEOUT):
                await self._redis.ping()
                await self._subscribe()
                await self._beat()
        except (RedisError, OSError, TimeoutError) as exc:
            await self._close_link()
            await self._redis.aclose()
            raise ClusterUnavailable(
                f"cannot reach Redis at {redacted_url(self.config.redis_url)} "
                f"({str(exc) or type(exc).__name__}); start Redis or fix {{setting}}."
            ) from None
        self._spawn(self._publish())
        self._spawn(self._keep_beating())
        log.info("joined relay cluster", extra={"event": "cluster_joined"})

    async def stop(self) -> None:
        """Leave the cluster after the server has closed its sockets."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(_REDIS_TIMEOUT):
                await self._outbox.join()  # the last closes reach the other instances
                await self._redis.zrem(_INSTANCES, self.instance)
        await cancel_and_wait([*self._tasks, self._recovery])
        await self._close_link()
        await self._redis.aclose()

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _subscribe(self) -> None:
        """Open the message path (publishing, and this instance's channel)."""
        await self._close_link()
        self._link = RedisLink(self._redis, _channel(self.instance), self._on_bundle, self._lose)
        await self._link.open()

    async def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(RedisError, OSError):
                await link.close()

    async def _beat(self) -> set[str]:
        ttl_ms = int(self.config.instance_ttl * 1000)
        alive = await self._heartbeat(keys=[_INSTANCES], args=[self.instance, ttl_ms])
        return set(alive)

    # ------------------------------------------------------------------ sockets of this instance

    async def receive(self, conn_id: int, message: str | bytes) -> list[Any]:
        """One message from a local socket; returns what the server's ``_apply`` returned."""
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        home = self._homes.get(conn_id)
        if home is not None:
            await self._outbox.put((home, encode(Message(self._origin(conn_id), text))))
            return []
        inbound = read(text)
        declared = inbound[0]
        if self.degraded is not None and declared is not None and declared.needs_redis:
            refusal = declared.refusal("relay_unavailable")
            return self._deliver([Send(conn_id, refusal)])  # type: ignore[no-any-return]
        facts: list[Any] | None = None
        subject = _subject(inbound)
        if subject is not None and self.core.is_movable(conn_id):
            route, name = subject
            keys = [_fact_key(fact) for fact in self.core.shared_reads(conn_id, inbound)]
            owner, facts = await self._route_owner(route, name, keys)
            if owner and owner != self.instance:
                await self._hand_over(conn_id, owner, text, facts)
                return []
        actions = await self._handle(conn_id, text, inbound, facts)
        return self._deliver(actions)  # type: ignore[no-any-return]

    def receive_at_once(self, conn_id: int, message: str | bytes) -> list[Any] | None:
        """:meth:`receive` without waiting, for a message that needs nothing from Redis (a
        frame of a session held here or of a handed-over socket: nearly all of them);
        None when it does, and the caller awaits :meth:`receive` instead."""
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        home = self._homes.get(conn_id)
        if home is not None:
            try:
                self._outbox.put_nowait((home, encode(Message(self._origin(conn_id), text))))
            except asyncio.QueueFull:
                return None  # receive() waits for room
            return []
        if self.degraded is not None:
            return None
        inbound = read(text)
        movable = _subject(inbound) is not None and self.core.is_movable(conn_id)
        if movable or self.core.shared_reads(conn_id, inbound):
            return None
        actions = self.core.receive(conn_id, text, time.monotonic(), inbound)
        journal, self.core.journal = self.core.journal, []
        if journal:  # not expected: only messages with shared facts record any
            self._spawn(self._write_shared(journal))
        return self._deliver(actions)  # type: ignore[no-any-return]

    def status(self) -> dict[str, int]:
        """Figures for ``/metrics``."""
        return {
            "redis_up": int(self.degraded is None),
            "redis_losses": self.redis_losses,
            "forwarded_sockets": len(self._homes),
            "guest_sockets": len(self._guests),
        }

    def release_guests(self) -> None:
        """This instance is stopping: sockets of other instances it handled lose their peer,
        not their relay."""
        for instance, socket in self._origins.values():
            self._post(instance, Frame(socket, _PEER_GONE))
            self._post(instance, Shut(socket, 1011, "peer_disconnected"))
        self._guests.clear()
        self._origins.clear()

    def forwarded_sockets(self) -> list[int]:
        """Local sockets another instance handles (closed by the server on shutdown)."""
        return list(self._homes)

    def closed(self, conn_id: int) -> None:
        """A local socket is gone; the instance handling it forgets it too."""
        home = self._homes.pop(conn_id, None)
        if home is not None:
            self._post(home, Closed(self._origin(conn_id)))

    async def _route_owner(
        self, route: Route, name: str, fact_keys: list[str]
    ) -> tuple[str, list[Any] | None]:
        """The live owner ('' for none) and the values and PTTLs of ``fact_keys``."""
        keys = [_route_key(route.kind, name), _INSTANCES, *fact_keys]
        args = [self.instance, str(self._route_ms[route.kind]), "1" if route.claims else "0"]
        try:
            if self._link is None:
                raise ConnectionError("the Redis link is down")
            # On the raw link: this is on every listen and connect.
            async with asyncio.timeout(_REDIS_TIMEOUT):
                reply = await self._link.command("EVAL", _OWNER, str(len(keys)), *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._lose(exc)
            return "", None
        return str(reply[0]), list(reply[1:])

    async def _hand_over(
        self, conn_id: int, owner: str, text: str, facts: list[Any] | None
    ) -> None:
        """Move a stateless socket to ``owner``: its slot here is freed, the owner counts it.
        The shared facts read with the owner lookup travel along, so the owner handles the
        message without reading them again."""
        client = self.core.client_key(conn_id)
        if client is None:  # closed while the owner was looked up
            return
        self._deliver(self.core.close(conn_id, time.monotonic()))
        self._homes[conn_id] = owner
        origin = self._origin(conn_id)
        await self._outbox.put((owner, encode(HandOver(origin, client, facts))))
        await self._outbox.put((owner, encode(Message(origin, text))))

    # ------------------------------------------------------------------ handling a message here

    async def _handle(
        self, conn_id: int, text: str, inbound: Inbound, facts: list[Any] | None = None
    ) -> list[Action]:
        """Run the core on one message with the shared facts it needs read before (``facts``
        when the caller has read them already) and written after."""
        if self.degraded is None:
            reads = self.core.shared_reads(conn_id, inbound)
            if reads and facts is None:
                facts = await self._read_facts([_fact_key(fact) for fact in reads])
            if reads and facts:
                self._adopt(reads, facts)
        actions = self.core.receive(conn_id, text, time.monotonic(), inbound)
        journal, self.core.journal = self.core.journal, []
        if journal and self.degraded is None:
            await self._write_shared(journal)
        return actions

    async def _read_facts(self, keys: list[str]) -> list[Any] | None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                    pipe.pttl(key)
                return list(await pipe.execute())
        except (RedisError, OSError) as exc:
            self._lose(exc)
            return None

    def _adopt(self, reads: list[SharedFact], facts: list[Any]) -> None:
        """Hand the core the value and PTTL read for each of ``reads`` (``facts``, in turn)."""
        now = time.monotonic()
        for fact, value, ttl_ms in zip(reads, facts[0::2], facts[1::2], strict=False):
            resets_at = now + _ms_left(ttl_ms)
            if fact.kind == "jti":
                if value:
                    self.core.adopt_consumed(fact.name, now)
            elif fact.name == "global":
                self.core.adopt_global_failures(_count(value), resets_at)
            else:
                self.core.adopt_failures(fact.name, fact.client, _count(value), resets_at)

    async def _write_shared(self, journal: list[SharedFact]) -> None:
        window_ms = self._ms(self.config.rate_window)
        jti_ms = self._ms(self.config.jti_ttl)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for fact in journal:
                    kind, name, _ = fact
                    if kind == "fail":
                        pipe.eval(_FAIL, 1, _fact_key(fact), window_ms)
                    elif kind == "jti":
                        pipe.set(_fact_key(fact), self.instance, nx=True, px=jti_ms)
                    else:  # "watch" / "agent" / "pending": later requests for it come here
                        key = _route_key(kind, name)
                        pipe.eval(_TAKE, 1, key, self.instance, self._route_ms[kind])
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._lose(exc)
            return
        for (kind, name, _), previous in zip(journal, results, strict=True):
            if kind == "agent" and isinstance(previous, str) and previous != self.instance:
                self._post(previous, AgentMoved(name))  # one registration per agent, cluster-wide

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(1, int(seconds * 1000))

    # ------------------------------------------------------------------ sockets of other instances

    def deliver_remote(self, action: Action) -> None:
        """A core action for a socket another instance holds: send it there."""
        origin = self._origins.get(action.conn)
        if origin is None:
            return
        instance, socket = origin
        if isinstance(action, Close):
            self._post(instance, Shut(socket, action.code, action.reason))
        else:
            self._post(instance, Frame(socket, action.text))

    def _origin(self, conn_id: int) -> str:
        """How other instances name a socket of this one."""
        return f"{self.instance}:{conn_id}"

    def _post(self, instance: str, envelope: Envelope) -> None:
        try:
            self._outbox.put_nowait((instance, encode(envelope)))
        except asyncio.QueueFull:
            # The publisher is far behind (Redis slow): the frame is lost, so are the sockets
            # crossing to that instance; dropped once however many envelopes overflow.
            if instance not in self._overflowed:
                self._overflowed.add(instance)
                log.warning("cluster outbox full", extra={"event": "cluster_overflow"})
                asyncio.get_running_loop().call_soon(self._overflow_gone, instance)

    def _overflow_gone(self, instance: str) -> None:
        self._overflowed.discard(instance)
        self._instance_gone(instance)

    async def _on_bundle(self, bundle: str) -> None:
        for envelope in unbundle(bundle):
            await self._on_envelope(envelope)

    async def _on_envelope(self, text: str) -> None:
        try:
            envelope = decode(text)
            # Frames only ever reach sockets this instance handed over, never local sessions.
            match envelope:
                case Frame(socket, frame) if socket in self._homes:
                    self._deliver([Send(socket, frame)])
                case Shut(socket, code, reason) if socket in self._homes:
                    self._deliver([Close(socket, code, reason)])
                case HandOver(origin, client, facts):
                    self._adopt_guest(origin, client, facts)
                case Message(origin, message):
                    await self._guest_message(origin, message)
                case Closed(origin):
                    self._drop_guest(origin)
                case AgentMoved(agent_id):
                    self._deliver(self.core.agent_moved(agent_id))
        except (RedisError, OSError):
            raise
        except EnvelopeError:
            log.warning("malformed cluster envelope", extra={"event": "cluster_envelope"})
        except Exception:
            # One bad envelope must not stop this instance from hearing the others.
            log.exception("cluster envelope failed", extra={"event": "cluster_envelope"})

    def _adopt_guest(self, origin: str, client: str, facts: list[Any] | None) -> None:
        """A socket of another instance handed over to this one, which owns its subject."""
        instance, _, number = origin.partition(":")
        conn_id = self._new_conn_id()
        self._guests[origin] = conn_id
        self._origins[conn_id] = (instance, int(number))
        if facts is not None:
            self._handed_facts[conn_id] = facts
        self._deliver(self.core.open(conn_id, client, time.monotonic()))

    async def _guest_message(self, origin: str, message: str) -> None:
        guest = self._guests.get(origin)
        if guest is not None:
            facts = self._handed_facts.pop(guest, None)
            self._deliver(await self._handle(guest, message, read(message), facts))

    def _drop_guest(self, origin: str) -> None:
        conn_id = self._guests.pop(origin, None)
        if conn_id is not None:
            del self._origins[conn_id]
            self._handed_facts.pop(conn_id, None)
            self._deliver(self.core.close(conn_id, time.monotonic()))

    # ------------------------------------------------------------------ publishing

    async def _publish(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < _PUBLISH_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                if self.degraded is None:  # nothing forwarded survives a lost Redis
                    await self._publish_batch(batch)
            except Exception:
                log.exception("cluster publish failed", extra={"event": "cluster_error"})
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def _publish_batch(self, batch: list[tuple[str, str]]) -> None:
        # One message per instance: each envelope prefixed with its length (order kept).
        bundles: dict[str, list[str]] = {}
        for instance, envelope in batch:
            bundles.setdefault(instance, []).append(envelope)
        link = self._link
        try:
            if link is None:
                raise ConnectionError("the Redis link is down")
            sent = [link.publish(_channel(i), bundle(parts)) for i, parts in bundles.items()]
            async with asyncio.timeout(_REDIS_TIMEOUT):
                receivers = await asyncio.gather(*sent)
        except (RedisError, OSError, TimeoutError) as exc:
            self._lose(exc)
            return
        # Nobody subscribed: that instance is gone; its sockets' peers are told at once.
        for instance, count in zip(bundles, receivers, strict=True):
            if count == 0:
                self._instance_gone(instance)

    # ------------------------------------------------------------------ liveness

    async def _keep_beating(self) -> None:
        # Three beats per instance_ttl: one late beat never makes a live instance look dead.
        while True:
            await asyncio.sleep(self.config.instance_ttl / 3)
            if self.degraded is None:
                try:
                    await self._beat_and_reap()
                except Exception:
                    log.exception("cluster heartbeat failed", extra={"event": "cluster_error"})

    async def _beat_and_reap(self) -> None:
        """Heartbeat, and forget instances that stopped beating."""
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT):
                alive = await self._beat()
        except (RedisError, OSError, TimeoutError) as exc:
            self._lose(exc)
            return
        peers = set(self._homes.values()) | {i for i, _ in self._origins.values()}
        for instance in peers - alive:
            self._instance_gone(instance)

    def _instance_gone(self, instance: str) -> None:
        """``instance`` died: sockets it handled for us and sockets it had here are dropped."""
        log.warning("relay instance lost", extra={"event": "instance_lost"})
        for conn_id in [c for c, home in self._homes.items() if home == instance]:
            del self._homes[conn_id]
            self._deliver([Send(conn_id, _PEER_GONE), Close(conn_id, 1011, "peer_disconnected")])
        for origin in [o for o in self._guests if o.split(":", 1)[0] == instance]:
            self._drop_guest(origin)

    def _lose(self, exc: BaseException) -> None:
        """Redis failed: refuse what needs it, drop what crossed it, retry in the background."""
        if self.degraded is not None:
            return
        self.degraded = DEGRADED_REASON
        self.redis_losses += 1
        log.warning(
            "redis unavailable, relay degraded",
            extra={"event": "redis_lost", "error": type(exc).__name__},
        )
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()
        homes, self._homes = self._homes, {}
        for conn_id in homes:
            self._deliver([Send(conn_id, _UNAVAILABLE), Close(conn_id, 1011, "relay_unavailable")])
        for origin in list(self._guests):
            self._drop_guest(origin)
        self._spawn(self._close_link())
        self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(_RECOVERY_INTERVAL)
            try:
                async with asyncio.timeout(2 * _REDIS_TIMEOUT):
                    await self._redis.ping()
                    await self._subscribe()
                    await self._beat()
                    await self._republish()
            except (RedisError, OSError, TimeoutError):
                await self._close_link()
                continue
            self.degraded = None
            log.info("redis reachable again", extra={"event": "redis_back"})
            return

    async def _republish(self) -> None:
        """Routes to what this instance still holds (Redis may have restarted empty)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, names in self.core.routing_names().items():
                for name in names:
                    px = self._route_ms[kind]
                    pipe.set(_route_key(kind, name), self.instance, nx=True, px=px)
            await pipe.execute()


def _count(value: Any) -> int:
    """A failure counter as read from Redis ('' or None when absent)."""
    return int(value) if value not in (None, "") else 0


def _ms_left(pttl: Any) -> float:
    """Seconds left from a PTTL reply (negative when the key is absent or has no expiry)."""
    return max(0, int(pttl)) / 1000


def _subject(inbound: Inbound) -> tuple[Route, str] | None:
    """The route of a message and the name it routes on; None for a message without a route
    or a refused one (the core's answer is the same wherever it lands)."""
    declared, message = inbound
    route = declared.route if declared is not None else None
    if route is None or message is None or isinstance(message, Refusal):
        return None
    name = getattr(message, route.subject)
    if isinstance(name, str) and 0 < len(name) <= _MAX_NAME_CHARS:
        return route, name
    return None
