"""docs/integration.md's Flask and Django sections, served for real and called signed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from authmesh.sdk._client import Client
from tests.docs.codeblocks import ROOT, extract
from tests.sdk.harness import wsgi_server
from tests.support.docs import DocsWorld, clean_environ

STEP = 30


def snippet(containing: str) -> str:
    (code,) = [
        block.code
        for block in extract(ROOT / "docs" / "integration.md")
        if block.language == "python" and containing in block.code
    ]
    return code


def test_flask_snippet_answers_a_signed_request(
    world: DocsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_MESH_DIR", str(world.server_home))
    namespace: dict[str, object] = {"__name__": "flask_snippet"}
    exec(snippet("from flask import"), namespace)
    with wsgi_server(namespace["app"]) as port, Client(home=world.worker_home) as client:
        response = client.post(f"http://127.0.0.1:{port}/orders", json={"amount": 3})
    assert response.status_code == 200, response.text
    assert response.json() == {"from": "worker", "order": {"amount": 3}}


DJANGO_SERVICE = """
import threading
import django
from django.conf import settings

settings.configure(
    SECRET_KEY="docs-test", ALLOWED_HOSTS=["*"], ROOT_URLCONF="__main__", USE_TZ=True,
    MIDDLEWARE=[
        "authmesh.sdk.django.AuthMeshMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",  # on in every new Django project
    ],
)
django.setup()
from django.core.handlers.wsgi import WSGIHandler
from django.http import JsonResponse
from django.urls import path
from werkzeug.serving import make_server

def orders(request):
    return JsonResponse({"from": request.authmesh.friendly_name})


urlpatterns = [path("orders", orders)]
server = make_server("127.0.0.1", 0, WSGIHandler(), threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_port, flush=True)
input()
"""


def test_django_with_csrf_middleware_accepts_a_signed_post(world: DocsWorld) -> None:
    service = subprocess.Popen(
        [sys.executable, "-c", DJANGO_SERVICE],
        env={
            **clean_environ(),
            "AUTH_MESH_DIR": str(world.server_home),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}",
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert service.stdout is not None
        port = int(service.stdout.readline())
        with Client(home=Path(world.worker_home)) as client:
            signed = client.post(f"http://127.0.0.1:{port}/orders", json={"amount": 3})
        assert signed.status_code == 200, signed.text
        assert signed.json() == {"from": "worker"}
    finally:
        service.kill()
        service.wait(STEP)
