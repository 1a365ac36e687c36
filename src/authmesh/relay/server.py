"""The relay's network layer: a thin ``websockets`` server around :class:`RelayCore`.

It serves ``/ws`` (WebSocket, no compression, 64 KiB messages), ``/health``, ``/metrics`` and
404 for everything else; feeds socket events to the core; and performs the core's actions.

Frames for a socket go through a backlog that exists only while the socket has frames in
flight, drained by a writer task that exists only as long (an idle socket costs neither).
Backpressure is end to end: when a socket's backlog passes a high-water mark, the reader that
produced the frames waits for it to drain, so the sender's own socket stops being read and TCP
slows the sender down. Only a socket whose backlog stays high for ``send_timeout`` seconds is
a slow consumer and is closed (1008 ``slow_consumer``). Keepalive pings are sent by the
relay's sweep, one pass for all sockets, instead of one task per socket.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from authmesh.relay.clientip import UNKNOWN_CLIENT, client_ip
from authmesh.relay.config import ClusterUnavailable, RelayConfig
from authmesh.relay.metrics import CONTENT_TYPE, RelayMetrics
from authmesh.relay.protocol import Action, Close, RelayCore, Send

if TYPE_CHECKING:
    from authmesh.relay.cluster import RedisCluster

__all__ = ["MAX_MESSAGE_BYTES", "RelayServer", "create_relay_server"]

log = logging.getLogger("authmesh.relay")

MAX_MESSAGE_BYTES = 65_536
# Backlog (frames) at which the producing reader waits, and at which it may go on again.
_BACKLOG_HIGH = 64
_BACKLOG_LOW = 16
# Frames are never queued past this, whoever produces them (the sweep does not wait).
_BACKLOG_LIMIT = 1024
# Below this many unsent bytes in the kernel-side buffer a frame is written at once, without
# a writer task (websockets' own flow-control high-water mark).
_WRITE_AT_ONCE_BYTES = 32 * 1024
_CLOSE_TIMEOUT = 2.0
_LISTEN_BACKLOG = 1024
_JSON = "application/json;charset=utf-8"
_TEXT = "text/plain;charset=utf-8"
_NO_HEADERS = Headers()


class _RelayConnection(ServerConnection):
    """Runs the relay's disconnect logic inside ``connection_lost``.

    asyncio calls ``connection_lost`` before it closes the socket, so the relay has forgotten
    a closed peer (freed its session, connection slot, watches) before that peer can observe
    the close; a client that reconnects at once never races its own previous socket.
    """

    on_lost: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("disconnect handling failed", extra={"event": "close_error"})
        super().connection_lost(exc)


@dataclasses.dataclass(slots=True, eq=False)
class _Link:
    """One open WebSocket and the frames still to be written to it."""

    ws: ServerConnection
    backlog: collections.deque[str | Close] | None = None
    writer: asyncio.Task[None] | None = None
    room: asyncio.Future[None] | None = None  # resolved when the backlog is low again
    pong: asyncio.Future[float] | None = None  # the keepalive ping awaiting its pong
    closing: bool = False

    def congested(self) -> bool:
        return self.backlog is not None and len(self.backlog) >= _BACKLOG_HIGH

    def release(self) -> None:
        """Wake the readers waiting for room."""
        if self.room is not None:
            if not self.room.done():
                self.room.set_result(None)
            self.room = None


def _write_at_once(ws: ServerConnection, text: str) -> bool:
    """Write one text frame synchronously when nothing is queued before it.

    The fast path of nearly every frame: no task, no await. It uses the documented sans-I/O
    protocol object and the asyncio transport, exactly what ``send()`` does before it
    waits for the buffer to drain. False when the frame must go through the backlog
    (the socket is closing or its buffer is already high).
    """
    transport = ws.transport
    if ws.protocol.state is not State.OPEN:
        return False
    if transport.get_write_buffer_size() >= _WRITE_AT_ONCE_BYTES:
        return False
    ws.protocol.send_text(text.encode())
    for data in ws.protocol.data_to_send():
        transport.write(data)
    return True


async def _close_within(ws: ServerConnection, code: int, reason: str) -> None:
    """Close with a handshake; abort the TCP connection if that does not finish in time.

    ``close()`` alone can wait without limit for a peer that stopped reading, because the
    close frame must first get through the full send buffer.
    """
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()


def _respond(
    connection: ServerConnection, status: int, body: str, content_type: str, head: bool
) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return dataclasses.replace(response, body=b"") if head else response


class RelayServer:
    """One relay instance. ``await start()`` binds (``port`` 0 picks a free port)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.core = RelayCore(config)
        self.metrics = RelayMetrics(self.core)
        self._links: dict[int, _Link] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._next_ping = 0.0
        # Sockets pinged in one pass, with the time their pongs are due; oldest first.
        self._ping_rounds: collections.deque[tuple[float, list[_Link]]] = collections.deque()
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
                from authmesh.relay.cluster import RedisCluster
            except ImportError:
                raise ClusterUnavailable(
                    "AMESH_REDIS_URL needs the redis package; install authmesh[redis]."
                ) from None
            cluster = RedisCluster(self.config, self.core, self._apply, lambda: next(self._ids))
            await cluster.start()  # ClusterUnavailable when Redis cannot be reached
            self.cluster = cluster
            self.metrics.add_cluster(cluster.status)
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=self.config.handshake_timeout,
            ping_interval=None,  # the sweep pings every socket (see _keepalive)
            close_timeout=_CLOSE_TIMEOUT,
            server_header=None,
            create_connection=_RelayConnection,
            backlog=_LISTEN_BACKLOG,
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
        server.close(close_connections=False)  # stop accepting; we close the peers ourselves
        if self.cluster is not None:
            self.cluster.release_guests()
        actions = self.core.shutdown()
        if self.cluster is not None:
            actions += [Close(c, 1001, "going_away") for c in self.cluster.forwarded_sockets()]
        self._apply(actions)
        writers = [link.writer for link in self._links.values() if link.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=_CLOSE_TIMEOUT + 1)
        for link in list(self._links.values()):
            link.ws.transport.abort()  # peers that never finished the closing handshake
        await server.wait_closed()
        if self.cluster is not None:
            await self.cluster.stop()
        log.info("relay stopped", extra={"event": "stopped"})

    async def __aenter__(self) -> RelayServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        head = request.method == "HEAD"
        if path == "/health":
            degraded = self.cluster.degraded if self.cluster is not None else None
            status = 200 if degraded is None else 503  # load balancers drain a degraded instance
            return _respond(connection, status, self.core.health(degraded), _JSON, head)
        if path == "/metrics":
            body = self.metrics.render().decode()
            return _respond(connection, 200, body, CONTENT_TYPE, head)
        if path != "/ws":
            return _respond(connection, 404, "Not found", _TEXT, head)
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return _respond(connection, 400, "WebSocket upgrade failed", _TEXT, head)
        return None

    # ------------------------------------------------------------------ WebSocket

    def _client_ip(self, ws: ServerConnection) -> str:
        remote: Any = ws.remote_address
        peer = str(remote[0]) if remote else UNKNOWN_CLIENT
        forwarded = ws.request.headers.get_all("X-Forwarded-For") if ws.request else []
        return client_ip(peer, forwarded, self.config.trust_proxy)

    @staticmethod
    def _forget_handshake(ws: ServerConnection) -> None:
        """Drop the stored handshake headers: nothing reads them after the client address.

        ``websockets`` needs the request and response objects themselves (``ws.request =
        None`` breaks it), so only their header maps are swapped for one shared empty map
        (about 0.8 KB per socket).
        """
        if ws.request is not None:
            ws.request.headers = _NO_HEADERS
        if ws.response is not None:
            ws.response.headers = _NO_HEADERS

    async def _handle(self, ws: ServerConnection) -> None:
        conn_id = next(self._ids)
        link = _Link(ws)
        self._links[conn_id] = link
        if isinstance(ws, _RelayConnection):
            ws.on_lost = lambda: self._closed(conn_id)
        ip = self._client_ip(ws)
        self._forget_handshake(ws)
        try:
            self._apply(self.core.open(conn_id, ip, time.monotonic()))
            cluster = self.cluster
            async for message in ws:
                if cluster is None:
                    congested = self._apply(self.core.receive(conn_id, message, time.monotonic()))
                else:
                    congested = await cluster.receive(conn_id, message)
                for peer in congested:
                    await self._wait_for_room(peer)
        except ConnectionClosed:
            pass
        finally:
            self._closed(conn_id)

    def _closed(self, conn_id: int) -> None:
        """The socket is gone: the core forgets it and its writer stops (idempotent)."""
        link = self._links.pop(conn_id, None)
        if link is None:
            return
        link.closing = True
        self._apply(self.core.close(conn_id, time.monotonic()))
        if self.cluster is not None:
            self.cluster.closed(conn_id)
        if link.writer is not None:
            link.writer.cancel()
        link.release()

    async def _wait_for_room(self, link: _Link) -> None:
        """Backpressure: wait until ``link`` drains; drop it if it does not in time."""
        if link.closing or not link.congested():
            return
        if link.room is None:
            link.room = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.config.send_timeout):
                await asyncio.shield(link.room)
        except TimeoutError:
            self._drop_slow(link)

    def _drop_slow(self, link: _Link) -> None:
        """A peer that stopped reading: close it (1008) without queueing anything more."""
        if not link.closing:
            log.warning("slow consumer dropped", extra={"event": "slow_consumer"})
            self._close_now(link, 1008, "slow_consumer")

    def _close_now(self, link: _Link, code: int, reason: str) -> None:
        """Close ``link`` at once, discarding its backlog.

        The close frame goes behind any unread data; ``close()`` aborts the TCP connection
        when the peer does not finish the closing handshake within its timeout.
        """
        link.closing = True
        if link.writer is not None:
            link.writer.cancel()
        link.backlog = None
        link.release()
        link.writer = asyncio.create_task(_close_within(link.ws, code, reason))

    async def _write(self, link: _Link) -> None:
        """Write the backlog in order; the task and the backlog end when it is empty."""
        backlog = link.backlog
        try:
            while backlog:
                item = backlog.popleft()
                if isinstance(item, Close):
                    link.closing = True
                    await _close_within(link.ws, item.code, item.reason)
                    return
                # A send waits only while the peer's TCP buffer is full; past the deadline
                # the peer is a slow consumer.
                async with asyncio.timeout(self.config.send_timeout):
                    await link.ws.send(item)
                if link.room is not None and len(backlog) <= _BACKLOG_LOW:
                    link.release()
        except ConnectionClosed:
            return
        except TimeoutError:
            self._drop_slow(link)
        finally:
            if link.writer is asyncio.current_task():
                link.writer = None
                link.backlog = None
                link.release()

    def _apply(self, actions: list[Action]) -> list[_Link]:
        """Queue the core's actions; returns the links now over their high-water mark."""
        congested: list[_Link] = []
        for action in actions:
            link = self._links.get(action.conn)
            if link is None:
                if self.cluster is not None:  # a socket of another instance
                    self.cluster.deliver_remote(action)
                continue
            if link.closing:
                continue
            backlog = link.backlog
            if backlog is None:
                if type(action) is Send and _write_at_once(link.ws, action.text):
                    continue
                backlog = link.backlog = collections.deque()
            elif len(backlog) >= _BACKLOG_LIMIT:
                self._drop_slow(link)
                continue
            backlog.append(action if isinstance(action, Close) else action.text)
            if link.writer is None:
                link.writer = asyncio.create_task(self._write(link))
            elif len(backlog) >= _BACKLOG_HIGH and link not in congested:
                congested.append(link)
        return congested

    async def _keepalive(self, now: float) -> None:
        """Every ``ping_interval``, ping all idle sockets in one pass; a socket that leaves its
        ping unanswered for ``ping_timeout`` is closed (1011, as websockets' own keepalive).

        Sockets with frames in flight are not pinged: their writer already notices a dead
        peer (``send_timeout``), and a ping would wait behind the same full buffer.
        """
        while self._ping_rounds and self._ping_rounds[0][0] <= now:
            _, pinged = self._ping_rounds.popleft()
            for link in pinged:
                if link.pong is not None and not link.pong.done() and not link.closing:
                    log.debug("keepalive timeout", extra={"event": "ping_timeout"})
                    self._close_now(link, 1011, "keepalive ping timeout")
                link.pong = None
        if now < self._next_ping:
            return
        self._next_ping = now + self.config.ping_interval
        idle = [
            link
            for link in self._links.values()
            if not link.closing and link.writer is None and link.pong is None
        ]
        results = await asyncio.gather(*(link.ws.ping() for link in idle), return_exceptions=True)
        for link, pong in zip(idle, results, strict=True):
            link.pong = pong if isinstance(pong, asyncio.Future) else None
        self._ping_rounds.append((now + self.config.ping_timeout, idle))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                now = time.monotonic()
                self._apply(self.core.tick(now))
                await self._keepalive(now)
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
