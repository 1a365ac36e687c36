"""Hostile requests against every adapter behind every server it runs behind here.

Each request (``verifier_requests.py``) carries no valid signature, so the rules are: never
a 2xx, never a 5xx. Failures are collected in a :class:`Tally` rather than raised, so one
campaign reports everything it found.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from authmesh.sdk._verifier import Verifier
from tests.hostile.servers import wsgiref_server
from tests.hostile.tally import Tally
from tests.hostile.verifier_requests import (
    NOT_ASCII_NUMBERS,
    forged_authorization,
    hostile_request,
    send,
)
from tests.sdk import apps
from tests.sdk.harness import uvicorn_server, wsgi_server
from tests.support.sdk import trusted_store, vector_key

__all__ = ["probe_lengths", "probe_server", "servers", "use_verifier"]

K1, K2, K3 = vector_key("K1"), vector_key("K2"), vector_key("K3")
Server = Callable[[Any], AbstractContextManager[int]]


def servers() -> list[tuple[str, Any, Server]]:
    """(name, dispatcher, server) for each adapter and server pairing tested here."""
    return [
        ("asgi", apps.AsgiDispatcher(), uvicorn_server),
        ("flask", apps.WsgiDispatcher(), wsgi_server),
        ("django", apps.DjangoDispatcher(), wsgi_server),
        ("wsgiref-flask", apps.WsgiDispatcher(), wsgiref_server),
        ("wsgiref-django", apps.DjangoDispatcher(), wsgiref_server),
    ]


def use_verifier(dispatcher: Any, home: Path) -> None:
    """Protect ``dispatcher`` with a verifier trusting K1 (controller) and K3 (target)."""
    store = trusted_store(home, [(K1, "controller", 1), (K3, "target", 1)])
    dispatcher.use(Verifier(store, max_body_bytes=256))


def _judge(name: str, port: int, request: bytes, tally: Tally) -> None:
    tally.tried(f"verifier-{name}", request)
    status_line = send(port, request)
    parts = status_line.split(b" ")
    if len(parts) < 2:
        if status_line:
            tally.fail(f"{name}: not a status line {status_line!r} for {request[:300]!r}")
        return  # closed without an answer: refused
    if parts[1][:1] == b"5":
        tally.crashes += 1
        tally.fail(f"{name}: {status_line!r} for {request[:300]!r}")
    elif parts[1][:1] == b"2":
        tally.fail(f"{name}: accepted without a valid signature: {request[:300]!r}")


def probe_server(name: str, port: int, examples: int, tally: Tally) -> None:
    """``examples`` generated requests to the server ``name`` on ``port``."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=hostile_request(K1, K2))
    def check(request: bytes) -> None:
        _judge(name, port, request, tally)

    check()


def probe_lengths(name: str, port: int, tally: Tally) -> None:
    """Content-Length values that are no ASCII number, with a current trusted-key header
    (so the verifier reads the body before it refuses the signature)."""
    authorization = forged_authorization(K1)
    for length in NOT_ASCII_NUMBERS:
        for method in ("GET", "POST"):
            head = (
                f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {authorization}\r\nContent-Length: {length}\r\n\r\n"
            )
            _judge(name, port, head.encode("latin-1"), tally)
