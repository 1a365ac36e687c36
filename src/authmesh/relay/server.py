"""The relay's network layer: a thin ``websockets`` server around :class:`RelayCore`.

It serves ``/ws`` (WebSocket, no compression, 64 KiB messages), ``/health``, ``/metrics`` and
404 for everything else; feeds socket events to the core; and performs the core's actions
through one bounded outbox per socket, so a peer that stops reading is dropped instead of
growing memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from authmesh.relay.clientip import UNKNOWN_CLIENT, client_ip
from authmesh.relay.config import RelayConfig
from authmesh.relay.metrics import CONTENT_TYPE, RelayMetrics
from authmesh.relay.protocol import Action, Close, RelayCore

__all__ = ["MAX_MESSAGE_BYTES", "RelayServer", "create_relay_server"]

log = logging.getLogger("authmesh.relay")

MAX_MESSAGE_BYTES = 65_536
_OUTBOX_FRAMES = 256
_CLOSE_TIMEOUT = 2.0
_BACKLOG = 1024
_JSON = "application/json;charset=utf-8"
_TEXT = "text/plain;charset=utf-8"


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


@dataclasses.dataclass(eq=False)
class _Link:
    ws: ServerConnection
    outbox: asyncio.Queue[str | Close]
    writer: asyncio.Task[None] | None = None


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
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=self.config.handshake_timeout,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=_CLOSE_TIMEOUT,
            server_header=None,
            create_connection=_RelayConnection,
            backlog=_BACKLOG,
        )
        self._port = self._server.sockets[0].getsockname()[1]
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
        self._apply(self.core.shutdown())
        writers = [link.writer for link in self._links.values() if link.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=_CLOSE_TIMEOUT + 1)
        for link in list(self._links.values()):
            link.ws.transport.abort()  # peers that never finished the closing handshake
        await server.wait_closed()
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
            return _respond(connection, 200, self.core.health(), _JSON, head)
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

    async def _handle(self, ws: ServerConnection) -> None:
        conn_id = next(self._ids)
        link = _Link(ws, asyncio.Queue(maxsize=_OUTBOX_FRAMES))
        link.writer = asyncio.create_task(self._write(link))
        self._links[conn_id] = link
        if isinstance(ws, _RelayConnection):
            ws.on_lost = lambda: self._closed(conn_id)
        try:
            self._apply(self.core.open(conn_id, self._client_ip(ws), time.monotonic()))
            async for message in ws:
                self._apply(self.core.receive(conn_id, message, time.monotonic()))
        except ConnectionClosed:
            pass
        finally:
            self._closed(conn_id)

    def _closed(self, conn_id: int) -> None:
        """The socket is gone: the core forgets it and its writer stops (idempotent)."""
        link = self._links.pop(conn_id, None)
        if link is None:
            return
        self._apply(self.core.close(conn_id, time.monotonic()))
        if link.writer is not None:
            link.writer.cancel()

    async def _write(self, link: _Link) -> None:
        try:
            while True:
                item = await link.outbox.get()
                if isinstance(item, Close):
                    await link.ws.close(item.code, item.reason)
                    return
                await link.ws.send(item)
        except ConnectionClosed:
            return

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            link = self._links.get(action.conn)
            if link is None:
                continue
            try:
                link.outbox.put_nowait(action if isinstance(action, Close) else action.text)
            except asyncio.QueueFull:
                # The peer stopped reading: drop it rather than buffer without bound.
                log.warning("slow consumer dropped", extra={"event": "slow_consumer"})
                link.ws.transport.abort()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                self._apply(self.core.tick(time.monotonic()))
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
