"""A Flask service that accepts only requests signed by a paired controller.

    AUTH_MESH_DIR=~/.amesh flask --app examples.flask_service run --port 8000

Production WSGI servers that keep the raw request URI (gunicorn, uWSGI) work as is.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from authmesh.sdk import Verifier
from authmesh.sdk.wsgi import AuthMeshWSGIMiddleware

app = Flask(__name__)
app.wsgi_app = AuthMeshWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, Verifier.from_home(), exempt_paths={"/health"}
)


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/orders")
def create_order() -> dict[str, Any]:
    device = request.environ["authmesh"]
    return {"accepted": request.get_json(), "from": device.friendly_name}
