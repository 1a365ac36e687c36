"""Shared SDK fixtures: real servers per adapter, a real redis-server, vector keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk import apps
from tests.sdk.harness import uvicorn_server, wsgi_server
from tests.support.redisproc import RedisServer


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
