"""The standard library's ``wsgiref`` server, which hands the application header values
exactly as received (werkzeug and uvicorn refuse some malformed ones themselves)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["wsgiref_server"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        """Requests are not logged (a campaign makes thousands)."""


class _ThreadedServer(WSGIServer):
    daemon_threads = True


@contextmanager
def wsgiref_server(app: Any) -> Iterator[int]:
    """Serve a WSGI app with ``wsgiref`` in a thread; yield the port."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadedServer, handler_class=_QuietHandler
    )
    with ThreadPoolExecutor(1) as serving:
        serving.submit(server.serve_forever)
        try:
            yield server.server_port
        finally:
            server.shutdown()
            server.server_close()
