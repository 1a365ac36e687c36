"""Redis nonce stores (``pip install authmesh[redis]``), shared by many server processes.

One command per check, atomic across processes: ``SET <prefix><key> 1 EX <ttl> NX``;
the nonce is fresh if and only if Redis answers OK (spec §6.6). The default prefix is
the reference's ``am:nonce:``. Keys are ``<deviceId>:<nonce>`` (the verifier scopes
them per device, W10), so they never collide with a reference server's raw nonces.

If Redis cannot be reached the store raises :class:`NonceStoreUnavailable` and the
verifier refuses the request (fail closed). ``fail_open=True`` accepts requests
instead while Redis is down — replay protection is then off, so only choose it when
availability matters more than replay safety; each such acceptance is logged.

Both classes take a client or a URL (the reference README's ``RedisNonceStore(url)``
form silently connected to localhost, W18); clients built from a URL use
short socket timeouts so a hung Redis cannot hang requests.
"""

from __future__ import annotations

import logging

from authmesh.errors import requires_extra

with requires_extra("redis", "authmesh.sdk.redis_nonce"):
    import redis
    import redis.asyncio

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TIMEOUT_SECONDS",
    "AsyncRedisNonceStore",
    "NonceStoreUnavailable",
    "RedisNonceStore",
]

DEFAULT_KEY_PREFIX = "am:nonce:"
DEFAULT_TIMEOUT_SECONDS = 2.0
_log = logging.getLogger("authmesh.sdk")


class NonceStoreUnavailable(Exception):
    """Redis did not answer; the request must be refused (fail closed)."""


def _fail_open_notice() -> None:
    _log.warning("[amesh] Redis unavailable: accepting the request WITHOUT replay protection")


class RedisNonceStore:
    """Synchronous store for WSGI and Django (``redis.Redis``)."""

    def __init__(
        self,
        client: redis.Redis | str = "redis://localhost:6379",
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        fail_open: bool = False,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(client, str):
            client = redis.Redis.from_url(
                client, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
            )
        self.client = client
        self.key_prefix = key_prefix
        self.fail_open = fail_open

    def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        try:
            reply = self.client.set(self.key_prefix + key, "1", ex=max(ttl_seconds, 1), nx=True)
        except redis.RedisError as error:
            if self.fail_open:
                _fail_open_notice()
                return True
            raise NonceStoreUnavailable("Redis is unavailable") from error
        return reply is True

    def close(self) -> None:
        self.client.close()


class AsyncRedisNonceStore:
    """Asynchronous store for ASGI (``redis.asyncio.Redis``)."""

    def __init__(
        self,
        client: redis.asyncio.Redis | str = "redis://localhost:6379",
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        fail_open: bool = False,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(client, str):
            client = redis.asyncio.Redis.from_url(
                client, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
            )
        self.client = client
        self.key_prefix = key_prefix
        self.fail_open = fail_open

    async def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        try:
            reply = await self.client.set(
                self.key_prefix + key, "1", ex=max(ttl_seconds, 1), nx=True
            )
        except redis.RedisError as error:
            if self.fail_open:
                _fail_open_notice()
                return True
            raise NonceStoreUnavailable("Redis is unavailable") from error
        return reply is True

    async def aclose(self) -> None:
        await self.client.aclose()
