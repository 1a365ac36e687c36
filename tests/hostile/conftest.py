"""Servers for the verifier campaign: each SDK adapter behind its real server
(``tests/sdk/conftest.py``), plus Flask and Django behind ``wsgiref`` (``servers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.servers import wsgiref_server
from tests.sdk import apps
from tests.sdk.conftest import adapter

__all__ = ["adapter", "wsgiref_adapter"]


@pytest.fixture(scope="session", params=["wsgiref-flask", "wsgiref-django"])
def wsgiref_adapter(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, int]]:
    """(name, dispatcher, port): Flask or Django behind ``wsgiref``."""
    name = request.param
    dispatcher = apps.WsgiDispatcher() if name == "wsgiref-flask" else apps.DjangoDispatcher()
    with wsgiref_server(dispatcher) as port:
        yield name, dispatcher, port
