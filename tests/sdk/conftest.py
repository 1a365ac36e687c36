"""Shared SDK fixtures: real servers per adapter, a real redis-server, vector keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authmesh.core.allowlist import AllowList, Device
from authmesh.core.keys import PrivateKey
from authmesh.store import AllowListStore, AmeshHome
from tests.sdk import apps
from tests.sdk.harness import uvicorn_server, wsgi_server
from tests.support.redisproc import RedisServer
from tests.support.vectorfiles import load

MIDDLEWARE = load("middleware.json")


def vector_key(name: str) -> PrivateKey:
    """K1 (controller), K2 (unknown) or K3 (target) of middleware.json."""
    return PrivateKey.from_scalar(bytes.fromhex(MIDDLEWARE["keys"][name]["private_key_hex"]))


@pytest.fixture(scope="session", params=["asgi", "wsgi", "django"])
def adapter(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, int]]:
    """(name, dispatcher, port): each adapter behind its real server, started once."""
    name = request.param
    if name == "asgi":
        dispatcher: Any = apps.AsgiDispatcher()
        with uvicorn_server(dispatcher) as port:
            yield name, dispatcher, port
    else:
        dispatcher = apps.WsgiDispatcher() if name == "wsgi" else apps.DjangoDispatcher()
        with wsgi_server(dispatcher) as port:
            yield name, dispatcher, port


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """The session's private redis-server (``tests/conftest.py``), database 0."""
    return redis_server.url()


TEST_HMAC_KEY = bytes(range(32))


def trusted_store(
    home: Path, entries: list[tuple[PrivateKey, str, int]], now: str = "2026-03-28T10:05:00.000Z"
) -> AllowListStore:
    """A sealed allow list in ``home`` trusting each (key, role, protocol)."""
    home.mkdir(parents=True, exist_ok=True)
    allow_list = AllowList.empty(now)
    for index, (key, role, protocol) in enumerate(entries):
        device = Device.new(
            device_id=key.device_id,
            public_key=key.public_key_b64,
            friendly_name=f"Device {index}",
            role=role,
            added_at=now,
            protocol=protocol,
        )
        allow_list = allow_list.with_device(device, now)
    (home / "allow_list.json").write_text(allow_list.render(TEST_HMAC_KEY), encoding="utf-8")
    return AllowListStore(AmeshHome(home), TEST_HMAC_KEY)
