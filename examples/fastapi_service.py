"""A FastAPI service that accepts only requests signed by a paired controller.

    AUTH_MESH_DIR=~/.amesh uvicorn examples.fastapi_service:app --port 8000

The identity and allow list come from the amesh home (``amesh init`` + ``amesh
listen`` on this machine). Every route but ``/health`` needs a valid signature.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from authmesh.sdk.asgi import AuthMeshMiddleware
from authmesh.sdk.fastapi import verified_device
from authmesh.sdk.verifier import VerifiedDevice, Verifier

app = FastAPI(title="authmesh example")
app.add_middleware(AuthMeshMiddleware, verifier=Verifier.from_home(), exempt_paths={"/health"})


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/orders")
async def create_order(
    request: Request, device: Annotated[VerifiedDevice, Depends(verified_device)]
) -> dict[str, Any]:
    order = await request.json()  # the middleware already checked these exact bytes
    return {"accepted": order, "from": device.friendly_name, "device": device.device_id}
