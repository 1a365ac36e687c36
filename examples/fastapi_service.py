"""A FastAPI service that accepts only requests signed by a paired controller.

    pip install "uvicorn[standard]"
    AUTH_MESH_DIR=~/.amesh uvicorn examples.fastapi_service:app --port 8000

``uvicorn[standard]`` brings httptools and uvloop, which uvicorn then uses by itself:
on the machine of docs/benchmarks.md a verified request took 151 µs of server CPU
with them against 214 µs with the pure-Python h11 parser and asyncio loop.

The identity and allow list come from the amesh home (``amesh init`` + ``amesh
listen`` on this machine). Every route but ``/health`` needs a valid signature.
``/metrics`` serves the verification counters (exempt here; keep it off the public
network or behind its own auth).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from authmesh.sdk import VerificationMetrics, VerifiedDevice, Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.fastapi import verified_device

app = FastAPI(title="authmesh example")
registry = CollectorRegistry()
verifier = Verifier.from_home(observer=VerificationMetrics(registry))
app.add_middleware(AuthMeshMiddleware, verifier=verifier, exempt_paths={"/health", "/metrics"})


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@app.post("/orders")
async def create_order(
    request: Request, device: Annotated[VerifiedDevice, Depends(verified_device)]
) -> dict[str, Any]:
    order = await request.json()  # the middleware already checked these exact bytes
    return {"accepted": order, "from": device.friendly_name, "device": device.device_id}
