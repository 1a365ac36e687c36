"""The cluster's message path through Redis: PUBLISH and SUBSCRIBE on two raw connections.

redis-py opens both connections (so every ``AMESH_REDIS_URL`` form works: password, TLS, unix
sockets); after that, commands are written as bytes and replies parsed by hiredis a whole
read at a time, instead of one redis-py call per message (its per-message cost was most of
the ~2 ms a crossing pairing session added).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.exceptions import ResponseError

__all__ = ["RedisLink"]

_READ_BYTES = 256 * 1024


def _command(*parts: str) -> bytes:
    encoded = [part.encode("utf-8", "surrogatepass") for part in parts]
    chunks = [b"*%d\r\n" % len(encoded)]
    for part in encoded:
        chunks += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(chunks)


class _Connection:
    """One raw connection: commands out, replies parsed by hiredis in."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection  # redis-py's, kept for disconnecting
        self.reader: asyncio.StreamReader = connection._reader
        self.writer: asyncio.StreamWriter = connection._writer
        self.parser = hiredis.Reader(encoding="utf-8", errors="surrogatepass")

    @classmethod
    async def open(cls, client: redis.Redis) -> _Connection:
        connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()
        return cls(connection)

    async def replies(self) -> list[Any]:
        """The replies in the next read (at least one); ConnectionError at the end."""
        replies: list[Any] = []
        while not replies:
            data = await self.reader.read(_READ_BYTES)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self.parser.feed(data)
            while (reply := self.parser.gets()) is not False:
                replies.append(reply)
        return replies

    async def close(self) -> None:
        await self.connection.disconnect()


class RedisLink:
    """Publish to any channel; receive this instance's channel.

    ``on_message(data)`` is awaited for each message, in order. When either connection
    fails, ``on_lost(exc)`` is called once and the link is dead (open a new one).
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        on_message: Callable[[str], Awaitable[None]],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_lost = on_lost
        self._publisher: _Connection | None = None
        self._subscriber: _Connection | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._lost = False

    async def open(self) -> None:
        """Connect both and subscribe (returns once Redis confirmed the subscription)."""
        self._publisher = await _Connection.open(self._client)
        self._subscriber = await _Connection.open(self._client)
        self._subscriber.writer.write(_command("SUBSCRIBE", self._channel))
        confirmation = await self._subscriber.replies()
        if not confirmation or confirmation[0][:1] != ["subscribe"]:
            raise ConnectionError(f"Redis refused the subscription: {confirmation!r}")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_replies(self._publisher)),
            loop.create_task(self._read_messages(self._subscriber, confirmation[1:])),
        ]

    def publish(self, channel: str, data: str) -> asyncio.Future[Any]:
        """Send one PUBLISH; the future gets the number of receivers."""
        return self.command("PUBLISH", channel, data)

    def command(self, *parts: str) -> asyncio.Future[Any]:
        """Send one command on the publishing connection; the future gets its reply
        (:class:`ResponseError` for an error reply). A caller that stops waiting for a reply
        must treat the link as lost: replies are matched to commands in order."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._lost or self._publisher is None:
            future.set_exception(ConnectionError("the Redis link is down"))
            return future
        self._publisher.writer.write(_command(*parts))
        self._waiting.append(future)
        return future

    async def close(self) -> None:
        self._lost = True
        for task in self._tasks:
            task.cancel()
        self._fail_waiting(ConnectionError("the Redis link is closed"))
        for connection in (self._publisher, self._subscriber):
            if connection is not None:
                await connection.close()

    def _fail_waiting(self, exc: BaseException) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def _lose(self, exc: BaseException) -> None:
        if not self._lost:
            self._lost = True
            self._fail_waiting(exc)
            self._on_lost(exc)

    async def _read_replies(self, connection: _Connection) -> None:
        try:
            while True:
                for reply in await connection.replies():
                    future = self._waiting.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(ResponseError(str(reply)))
                    else:
                        future.set_result(reply)
        except (OSError, IndexError) as exc:
            self._lose(exc)

    async def _read_messages(self, connection: _Connection, early: list[Any]) -> None:
        try:
            pending = early
            while True:
                for reply in pending:
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == "message":
                        await self._on_message(reply[2])
                pending = await connection.replies()
        except OSError as exc:
            self._lose(exc)
