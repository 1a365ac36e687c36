"""The relay's network layer: a compiled WebSocket transport (picows, on uvloop where
available) around :class:`RelayCore`.

Every accepted connection first reads one HTTP request head (``http.py``) under a size limit,
a deadline (``handshake_timeout``, enforced by the sweep) and a cap on connections still in
that phase per address. ``/health``, ``/metrics`` and unknown paths are answered there; an
upgrade on ``/ws`` hands the socket, with the bytes already read, to picows, which answers
the handshake and parses frames in C. Frames are fed to the core; its actions are performed
synchronously (a send is one ``transport.send``: no task, no queue of our own).

Backpressure is end to end: when a socket's kernel-side buffer passes its high-water mark,
the sockets whose messages produced frames for it stop being read until it drains, so TCP
slows the senders down. A socket that stays over the mark for ``send_timeout`` seconds, or
whose unsent bytes pass ``MAX_UNSENT_BYTES`` however fast, is a slow consumer and is closed
(1008 ``slow_consumer``). Keepalive pings, the handshake deadline and the slow-consumer
deadline are all checked by the relay's one sweep, never by a task or timer per socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from multidict import CIMultiDict
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from authmesh.relay._clientip import UNKNOWN_CLIENT, client_ip, rate_key
from authmesh.relay._config import ClusterUnavailable, RelayConfig
from authmesh.relay._http import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    parse_head,
    response,
    upgrade_head,
)
from authmesh.relay._metrics import CONTENT_TYPE, RelayMetrics
from authmesh.relay._protocol import Action, Close, RelayCore
from authmesh.relay._tasks import cancel_and_wait

if TYPE_CHECKING:
    from authmesh.relay._cluster import RedisCluster

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_UNSENT_BYTES",
    "RelayServer",
    "create_relay_server",
    "run",
]

log = logging.getLogger("authmesh.relay")
# picows' own log lines (one per accepted socket, one per malformed frame) would let any client
# fill the log; the relay logs its own events instead.
_TRANSPORT_LOG = logging.LoggerAdapter(logging.getLogger("authmesh.relay.transport"), {})
_TRANSPORT_LOG.logger.setLevel(logging.CRITICAL)

MAX_MESSAGE_BYTES = 65_536
# A socket with more unsent bytes than this is dropped at once, whoever is producing them.
MAX_UNSENT_BYTES = 1024 * 1024
# A clustered socket's messages waiting for Redis; past the high mark it stops being read.
_INBOX_HIGH = 64
_MAX_WAITING_FOR_REDIS = 32
_CLOSE_TIMEOUT = 2.0
_LISTEN_BACKLOG = 1024
# picows' read buffer starts at its minimum and grows only for large frames.
_READ_BUFFER_BYTES = 2048
_MAX_READ_BYTES = 64 * 1024
_JSON = "application/json;charset=utf-8"
_TEXT = "text/plain;charset=utf-8"
_SWITCHING_STATUS = HTTPStatus.SWITCHING_PROTOCOLS
_SWITCHING_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)
_NO_HEADERS: CIMultiDict[str] = CIMultiDict()
_TOO_MANY_PENDING = response(
    503, "Too many connections from this address are still opening; retry later.", _TEXT
)
_TEXT_FRAME, _BINARY_FRAME = WSMsgType.TEXT, WSMsgType.BINARY
_CONTINUATION, _CLOSE = WSMsgType.CONTINUATION, WSMsgType.CLOSE
_PING, _PONG = WSMsgType.PING, WSMsgType.PONG

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (not on Windows), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class _Socket(WSListener):
    """One upgraded WebSocket: picows calls these methods; they hand events to the relay."""

    __slots__ = (
        "blocking",
        "closing",
        "conn_id",
        "fragments",
        "held",
        "inbox",
        "ip",
        "ping_due",
        "relay",
        "stalled_at",
        "text",
        "timer",
        "transport",
    )

    def __init__(self, relay: RelayServer, conn_id: int, ip: str) -> None:
        self.relay = relay
        self.conn_id = conn_id
        self.ip = ip
        self.transport: WSTransport | None = None
        self.fragments: bytearray | None = None  # a fragmented message being assembled
        self.text = True
        self.held: list[_Socket] | None = None  # readers paused until this socket drains
        self.blocking = 0  # how many reasons this socket is not being read
        self.stalled_at = 0.0  # when its write buffer passed the high-water mark
        self.inbox: collections.deque[str | bytes] | None = None
        self.ping_due = False
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None

    def listener_for(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        """picows' listener factory: this socket's listener is the socket itself."""
        return WSUpgradeResponseWithListener(_Switching(), self)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        # Nothing reads the handshake again, but picows keeps it: shared empty values
        # replace its parts (about 1 KiB per socket).
        request, response = transport.request, transport.response
        request.method = request.path = request.version = response.version = b""
        request.headers = response.headers = _NO_HEADERS
        self.relay._opened(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # No extension is negotiated, so a reserved bit is a protocol error (RFC 6455 §5.2).
            self.relay._close(self, 1002, "reserved bits set")
        elif kind in (_TEXT_FRAME, _BINARY_FRAME):
            # Once closing (perhaps by picows, for a frame over the size limit, which it keeps
            # parsing until it disconnects) nothing more is read from this socket.
            if not transport.is_close_frame_sent:
                self._start(frame, kind == _TEXT_FRAME)
        elif kind == _CONTINUATION:
            if not transport.is_close_frame_sent:
                self._continue(frame)
        elif kind == _PING:
            # Not while the peer leaves what it is sent unread: a client flooding pings
            # without reading would otherwise have pongs queued without bound.
            if not self.stalled_at and not transport.is_close_frame_sent:
                transport.send(_PONG, frame.get_payload_as_bytes())
        elif kind == _PONG:
            self.ping_due = False
        elif kind == _CLOSE:
            self.relay._close_received(self, frame.get_payload_as_bytes())

    def _start(self, frame: WSFrame, text: bool) -> None:
        """A text or binary frame: a whole message, or the first fragment of one."""
        if self.fragments is not None:
            self.relay._close(self, 1002, "expected a continuation frame")
        elif not frame.fin:
            self.text = text
            self.fragments = bytearray(frame.get_payload_as_memoryview())
        elif text:
            self._receive_text(frame.get_payload_as_utf8_text)
        else:
            self.relay._receive(self, frame.get_payload_as_bytes())

    def _continue(self, frame: WSFrame) -> None:
        fragments = self.fragments
        if fragments is None:
            self.relay._close(self, 1002, "unexpected continuation frame")
            return
        fragments += frame.get_payload_as_memoryview()
        if len(fragments) > MAX_MESSAGE_BYTES:
            self.relay._close(self, 1009, "message too big")
            return
        if not frame.fin:
            return
        self.fragments = None
        if self.text:
            self._receive_text(fragments.decode)
        else:
            self.relay._receive(self, bytes(fragments))

    def _receive_text(self, decode: Callable[[], str]) -> None:
        """A complete text message; invalid UTF-8 closes the socket (1007)."""
        try:
            text = decode()
        except UnicodeDecodeError:
            self.relay._close(self, 1007, "invalid UTF-8")
            return
        self.relay._receive(self, text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.relay._forget(self)

    def pause_writing(self) -> None:
        self.relay._stalled(self)

    def resume_writing(self) -> None:
        self.relay._drained(self)

    def pause_reading(self) -> None:
        self.blocking += 1
        if self.blocking == 1 and self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        self.blocking -= 1
        if self.blocking == 0 and not self.closing and self.transport is not None:
            self.transport.underlying_transport.resume_reading()


class _Switching(WSUpgradeResponse):
    """The 101 answer to an upgrade, written in one step.

    picows' own fills a header multidict and formats each line in Python for every socket;
    this one's headers hold only the ``Sec-WebSocket-Accept`` value picows adds.
    """

    __slots__ = ()

    def __init__(self) -> None:
        self.version = b"HTTP/1.1"
        self.status = _SWITCHING_STATUS
        self.headers = CIMultiDict()
        self.body = None

    def to_bytes(self) -> bytearray:
        accept = self.headers["Sec-WebSocket-Accept"].encode()
        return bytearray(_SWITCHING_HEAD + accept + b"\r\n\r\n")


class _Accepted:
    """An accepted connection's transport as picows sees it when it takes the socket over.

    picows' ``connection_made`` sets TCP_NODELAY and TCP_QUICKACK and reads four socket
    options for a log line the relay silences; on uvloop each of those is a system call
    through a temporary ``socket.socket``, about a tenth of the CPU of a pairing socket.
    uvloop already sets TCP_NODELAY on every accepted socket and QUICKACK is a hint the
    kernel soon drops, so this view answers them without touching the socket (it stands in
    for the socket too); everything else goes to the real transport.
    """

    __slots__ = ("_fd", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._fd: int = transport.get_extra_info("socket").fileno()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self
        return self._transport.get_extra_info(name, default)

    def fileno(self) -> int:
        return self._fd

    def setsockopt(self, *option: Any) -> None:
        """Options picows sets are set already (see the class)."""

    def getsockopt(self, *option: Any) -> int:
        """Read only for picows' silenced log line."""
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _valid_close_payload(payload: bytes) -> bool:
    """A close frame a peer may send (RFC 6455 §5.5.1, §7.4): empty, or a code that may be
    sent on the wire followed by a UTF-8 reason."""
    if not payload:
        return True
    if len(payload) < 2:
        return False
    code = int.from_bytes(payload[:2], "big")
    sendable = (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return False
    return sendable


class _Front(asyncio.Protocol):
    """A connection until its request head is read: answered, or upgraded to a ``_Socket``."""

    __slots__ = ("buffer", "peer", "relay", "since", "transport")

    def __init__(self, relay: RelayServer) -> None:
        self.relay = relay
        self.buffer = bytearray()
        self.peer = UNKNOWN_CLIENT
        self.since = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0])
        self.relay._arrived(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if not buffer[:1].isupper():
            # Not HTTP at all (a TLS handshake sent to the plain port, say): answered at once,
            # so the client fails now rather than after the handshake timeout.
            self.relay._answer(self, 400, "Invalid HTTP request", _TEXT)
        elif end > MAX_HEAD_BYTES or (end < 0 and len(buffer) > MAX_HEAD_BYTES):
            # Checked even when the whole head came in one read: a large head is never parsed.
            self.relay._answer(self, 400, "Request head too large", _TEXT)
        elif end >= 0:
            self.relay._request(self, bytes(buffer[:end]), bytes(buffer[end + 4 :]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay._departed(self)


class _Protocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol with bounded reads.

    picows doubles its read buffer whenever one read nearly fills it and never shrinks it,
    so a peer that floods faster than the relay reads could grow it without limit. Reading
    at most ``_MAX_READ_BYTES`` at a time bounds it near twice the largest message; a socket
    that must wait (backpressure) is not read at all.
    """

    __slots__ = ()

    def get_buffer(self, size_hint: int) -> memoryview:
        buffer: memoryview = super().get_buffer(size_hint)
        return buffer[:_MAX_READ_BYTES] if len(buffer) > _MAX_READ_BYTES else buffer


def _feed(protocol: WSProtocol, data: bytes) -> None:
    """Give ``protocol`` (a picows buffered protocol) bytes read before it took the socket."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(-1)
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        view = view[size:]
        protocol.buffer_updated(size)


class RelayServer:
    """One relay instance. ``await start()`` binds (``port`` 0 picks a free port)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.core = RelayCore(config)
        self.metrics = RelayMetrics(self.core)
        self._sockets: dict[int, _Socket] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._port: int | None = None
        # Connections still in their HTTP phase (arrival order) and their count per address.
        self._pending: dict[_Front, None] = {}
        self._pending_per_address: collections.Counter[str] = collections.Counter()
        self._stalled_sockets: set[_Socket] = set()
        self._next_ping = 0.0
        # Sockets pinged in one pass, with the time their pongs are due; oldest first.
        self._ping_rounds: collections.deque[tuple[float, list[_Socket]]] = collections.deque()
        self._drains: set[asyncio.Task[None]] = set()
        # Messages handled against Redis at once, whichever sockets they come from: each
        # takes a connection of the Redis client's pool, which must never run out.
        self._waiting_for_redis = asyncio.Semaphore(_MAX_WAITING_FOR_REDIS)
        self._all_closed: asyncio.Event | None = None
        # Set when AMESH_REDIS_URL is: state shared with other instances (see cluster.py).
        self.cluster: RedisCluster | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        """The bound port (the configured one before :meth:`start`)."""
        return self._port if self._port is not None else self.config.port

    @property
    def url(self) -> str:
        """``ws://host:port/ws`` of the running relay (loopback when bound to all addresses)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}/ws"

    async def start(self) -> RelayServer:
        if self._server is not None:
            return self
        if self.config.redis_url and self.cluster is None:
            try:
                from authmesh.relay._cluster import RedisCluster
            except ImportError:
                raise ClusterUnavailable(
                    "AMESH_REDIS_URL needs the redis package; install authmesh[redis]."
                ) from None
            cluster = RedisCluster(self.config, self.core, self._apply, lambda: next(self._ids))
            await cluster.start()  # ClusterUnavailable when Redis cannot be reached
            self.cluster = cluster
            self.metrics.add_cluster(cluster.status)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Front(self),
            self.config.host or None,
            self.config.port,
            backlog=_LISTEN_BACKLOG,
            # Workers (AMESH_WORKERS) share the port; the kernel spreads connections.
            reuse_port=self.config.workers > 1 or None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._next_ping = time.monotonic() + self.config.ping_interval
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("relay started", extra={"event": "started", "port": self._port})
        return self

    async def stop(self) -> None:
        """Tell every peer the relay is going away (1001), then stop listening."""
        if self._server is None:
            return
        server, self._server = self._server, None
        if self._sweeper is not None:
            self._sweeper.cancel()
        server.close()
        for front in list(self._pending):
            if front.transport is not None:
                front.transport.abort()
        await self._close_sockets()
        await cancel_and_wait([self._sweeper, *self._drains])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await server.wait_closed()
        if self.cluster is not None:
            await self.cluster.stop()
        log.info("relay stopped", extra={"event": "stopped"})

    async def _close_sockets(self) -> None:
        """Every socket told 1001; those that do not finish the closing handshake in time
        are aborted."""
        if self.cluster is not None:
            self.cluster.release_guests()
        actions = self.core.shutdown()
        if self.cluster is not None:
            actions += [Close(c, 1001, "going_away") for c in self.cluster.forwarded_sockets()]
        self._apply(actions)
        if self._sockets:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT + 1):
                    await self._all_closed.wait()
        for sock in list(self._sockets.values()):
            self._abort(sock)

    async def __aenter__(self) -> RelayServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP phase

    def _arrived(self, front: _Front) -> None:
        """A TCP connection was accepted: refuse it over the caps on unfinished upgrades.

        The connection caps (``max_connections``, ``max_connections_per_ip``) hold for
        upgrades still under way as they do for open sockets. Behind trusted proxies every
        connection comes from a proxy, so only the total applies before the head is read.
        """
        address = self._pending_key(front)
        per_address = self.config.max_connections_per_ip
        if len(self._pending) >= self.config.max_connections or (
            address is not None and self._pending_per_address[address] >= per_address
        ):
            self.core.stats.rejections["too_many_pending_upgrades"] += 1
            assert front.transport is not None
            front.transport.write(_TOO_MANY_PENDING)
            front.transport.close()
            return
        front.since = time.monotonic()
        self._pending[front] = None
        if address is not None:
            self._pending_per_address[address] += 1

    def _pending_key(self, front: _Front) -> str | None:
        """The address an unfinished upgrade counts against (None behind trusted proxies)."""
        if self.config.trust_proxy > 0:
            return None
        # The kernel's IPv4 text is already canonical; IPv6 counts by its /64.
        return rate_key(front.peer) if ":" in front.peer else front.peer

    def _departed(self, front: _Front) -> None:
        """``front`` has left its HTTP phase (answered, upgraded, closed or timed out)."""
        if front not in self._pending:
            return
        del self._pending[front]
        address = self._pending_key(front)
        if address is not None:
            self._pending_per_address[address] -= 1
            if self._pending_per_address[address] <= 0:
                del self._pending_per_address[address]

    def _answer(
        self, front: _Front, status: int, body: str, content_type: str, head: bool = False
    ) -> None:
        self._departed(front)
        assert front.transport is not None
        front.transport.write(response(status, body, content_type, head))
        front.transport.close()

    def _request(self, front: _Front, head: bytes, after_head: bytes) -> None:
        try:
            request = parse_head(head)
        except HttpError as exc:
            self._answer(front, 400, f"Invalid HTTP request: {exc}", _TEXT)
            return
        is_head = request.method == "HEAD"
        if request.path == "/health":
            degraded = self.cluster.degraded if self.cluster is not None else None
            status = 200 if degraded is None else 503  # load balancers drain a degraded instance
            self._answer(front, status, self.core.health(degraded), _JSON, is_head)
        elif request.path == "/metrics":
            body = self.metrics.render().decode()
            self._answer(front, 200, body, CONTENT_TYPE, is_head)
        elif request.path != "/ws":
            self._answer(front, 404, "Not found", _TEXT, is_head)
        elif not request.upgrade or request.method != "GET":
            self._answer(front, 400, "WebSocket upgrade failed", _TEXT, is_head)
        else:
            self._upgrade(front, request, after_head)

    def _upgrade(self, front: _Front, request: Request, after_head: bytes) -> None:
        """Hand the socket to picows, which answers the upgrade and then reads frames."""
        self._departed(front)
        front.buffer.clear()  # uvloop may keep the first protocol referenced
        ip = client_ip(front.peer, request.forwarded_for, self.config.trust_proxy)
        sock = _Socket(self, next(self._ids), ip)
        protocol = _Protocol(
            None,  # host and port: a client's
            None,  # path: a client's
            False,  # server side
            sock.listener_for,
            _TRANSPORT_LOG,
            True,  # an exception escaping on_ws_frame closes the socket (1011)
            None,  # no handshake timer: the head is already here
            False,  # keepalive is the relay's sweep
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            False,  # pings are answered by _Socket, which can refuse to queue the pong
            MAX_MESSAGE_BYTES,
            None,
            _READ_BUFFER_BYTES,
        )
        transport = front.transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(_Accepted(transport))
        _feed(protocol, upgrade_head(request) + after_head)

    # ------------------------------------------------------------------ WebSocket

    def _opened(self, sock: _Socket) -> None:
        self._sockets[sock.conn_id] = sock
        self._apply(self.core.open(sock.conn_id, sock.ip, time.monotonic()))

    def _receive(self, sock: _Socket, message: str | bytes) -> None:
        """One complete message from ``sock``."""
        if sock.closing:
            return
        cluster = self.cluster
        if cluster is None:
            congested = self._apply(self.core.receive(sock.conn_id, message, time.monotonic()))
        elif sock.inbox is not None:
            self._queue(sock, message)  # behind messages waiting for Redis
            return
        else:
            handled = cluster.receive_at_once(sock.conn_id, message)
            if handled is None:
                self._queue(sock, message)
                return
            congested = handled
        if congested:
            self._hold(sock, congested)

    def _queue(self, sock: _Socket, message: str | bytes) -> None:
        """Clustered: messages may wait for Redis, so each socket's are handled in order by
        a task that exists only while it has messages waiting."""
        inbox = sock.inbox
        if inbox is None:
            inbox = sock.inbox = collections.deque()
            task = asyncio.get_running_loop().create_task(self._drain(sock, inbox))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        inbox.append(message)
        if len(inbox) == _INBOX_HIGH:
            sock.pause_reading()

    async def _drain(self, sock: _Socket, inbox: collections.deque[str | bytes]) -> None:
        cluster = self.cluster
        assert cluster is not None
        try:
            while inbox and not sock.closing:
                full = len(inbox) >= _INBOX_HIGH
                try:
                    async with self._waiting_for_redis:
                        congested = await cluster.receive(sock.conn_id, inbox[0])
                except Exception:
                    log.exception("cluster receive failed", extra={"event": "cluster_error"})
                    congested = []
                inbox.popleft()
                if congested:
                    self._hold(sock, congested)
                if full and len(inbox) < _INBOX_HIGH:
                    sock.resume_reading()
        finally:
            sock.inbox = None

    def _apply(self, actions: list[Action]) -> list[_Socket]:
        """Perform the core's actions; returns the sockets now over their high-water mark."""
        congested: list[_Socket] = []
        for action in actions:
            sock = self._sockets.get(action.conn)
            if sock is None:
                if self.cluster is not None:  # a socket of another instance
                    self.cluster.deliver_remote(action)
                continue
            if sock.closing:
                continue
            if isinstance(action, Close):
                self._close(sock, action.code, action.reason)
                continue
            assert sock.transport is not None
            sock.transport.send(_TEXT_FRAME, action.text)
            if sock.stalled_at:
                unsent = sock.transport.underlying_transport.get_write_buffer_size()
                if unsent > MAX_UNSENT_BYTES:
                    self._drop_slow(sock)
                elif sock not in congested:
                    congested.append(sock)
        return congested

    def _hold(self, reader: _Socket, congested: list[_Socket]) -> None:
        """Backpressure: stop reading ``reader`` until every socket in ``congested`` drains."""
        for sock in congested:
            if sock.closing:
                continue
            if sock.held is None:
                sock.held = []
            sock.held.append(reader)
            reader.pause_reading()

    def _stalled(self, sock: _Socket) -> None:
        sock.stalled_at = time.monotonic()
        self._stalled_sockets.add(sock)

    def _drained(self, sock: _Socket) -> None:
        sock.stalled_at = 0.0
        self._stalled_sockets.discard(sock)
        self._release(sock)

    @staticmethod
    def _release(sock: _Socket) -> None:
        """The readers held back by ``sock`` may go on."""
        held, sock.held = sock.held, None
        for reader in held or ():
            reader.resume_reading()

    def _drop_slow(self, sock: _Socket) -> None:
        """A peer that stopped reading: close it (1008) without sending it anything more."""
        if not sock.closing:
            log.warning("slow consumer dropped", extra={"event": "slow_consumer"})
            self._close(sock, 1008, "slow_consumer")

    def _close(self, sock: _Socket, code: int, reason: str) -> None:
        """Start the closing handshake; abort the TCP connection if it does not end in time
        (the close frame waits behind any unread data)."""
        if sock.closing:
            return
        sock.closing = True
        self._release(sock)
        self._stalled_sockets.discard(sock)
        assert sock.transport is not None
        sock.transport.send_close(WSCloseCode(code), reason.encode())
        sock.timer = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT, self._abort, sock)

    def _close_received(self, sock: _Socket, payload: bytes) -> None:
        """The peer's close frame: answer it (unless it answers ours) and end the socket."""
        transport = sock.transport
        assert transport is not None
        if not sock.closing and not transport.is_close_frame_sent:
            if _valid_close_payload(payload):
                transport.send(_CLOSE, payload)  # echo code and reason, as websockets does
            else:
                transport.send_close(WSCloseCode(1002), b"invalid close frame")
        self._forget(sock)
        transport.disconnect()

    def _abort(self, sock: _Socket) -> None:
        self._forget(sock)
        if sock.transport is not None:
            sock.transport.disconnect(graceful=False)

    def _forget(self, sock: _Socket) -> None:
        """The socket is gone (or going): the core forgets it before the TCP connection
        ends, so a client that reconnects at once never races its own previous socket."""
        if self._sockets.pop(sock.conn_id, None) is None:
            return
        sock.closing = True
        if sock.timer is not None:
            sock.timer.cancel()
            sock.timer = None
        self._stalled_sockets.discard(sock)
        self._release(sock)
        self._apply(self.core.close(sock.conn_id, time.monotonic()))
        if self.cluster is not None:
            self.cluster.closed(sock.conn_id)
        if self._all_closed is not None and not self._sockets:
            self._all_closed.set()

    # ------------------------------------------------------------------ the sweep

    def _expire_handshakes(self, now: float) -> None:
        """Connections that have not sent a full request head in time are dropped."""
        deadline = now - self.config.handshake_timeout
        while self._pending:
            front = next(iter(self._pending))
            if front.since > deadline:
                break
            self._departed(front)
            if front.transport is not None:
                front.transport.abort()

    def _expire_stalls(self, now: float) -> None:
        deadline = now - self.config.send_timeout
        for sock in [s for s in self._stalled_sockets if s.stalled_at <= deadline]:
            self._drop_slow(sock)

    def _keepalive(self, now: float) -> None:
        """Every ``ping_interval``, ping all idle sockets in one pass; a socket that leaves its
        ping unanswered for ``ping_timeout`` is closed (1011, as websockets' own keepalive).

        Stalled sockets are not pinged: the slow-consumer deadline already covers them.
        """
        while self._ping_rounds and self._ping_rounds[0][0] <= now:
            _, pinged = self._ping_rounds.popleft()
            for sock in pinged:
                if sock.ping_due and not sock.closing:
                    log.debug("keepalive timeout", extra={"event": "ping_timeout"})
                    self._close(sock, 1011, "keepalive ping timeout")
                sock.ping_due = False
        if now < self._next_ping:
            return
        self._next_ping = now + self.config.ping_interval
        idle = [
            sock
            for sock in self._sockets.values()
            if not sock.closing and not sock.stalled_at and not sock.ping_due
        ]
        for sock in idle:
            assert sock.transport is not None
            sock.transport.send_ping()
            sock.ping_due = True
        self._ping_rounds.append((now + self.config.ping_timeout, idle))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                now = time.monotonic()
                self._expire_handshakes(now)
                self._apply(self.core.tick(now))
                self._expire_stalls(now)
                self._keepalive(now)
            except Exception:
                log.exception("sweep failed", extra={"event": "sweep_error"})


def create_relay_server(
    port: int | None = None,
    host: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> RelayServer:
    """A relay configured from ``env`` (default: ``os.environ``) with keyword overrides.

    ``create_relay_server(port=0)`` gives a relay on a free port; read ``.port`` after
    ``await relay.start()``. Any :class:`RelayConfig` field can be passed as a keyword.
    """
    config = RelayConfig.from_env(
        os.environ if env is None else env, port=port, host=host, **settings
    )
    return RelayServer(config)
