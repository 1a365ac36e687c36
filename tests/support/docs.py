"""The world the doc blocks run in: a relay, two paired homes, a protected service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from authmesh.core._allowlist import Device
from authmesh.store._allowlist_store import now_timestamp
from authmesh.store._context import load_context
from authmesh.store._home import AmeshHome
from tests.support.relayproc import RelayProcess


@dataclass
class DocsWorld:
    """What the doc blocks run against: a relay, two paired homes, a protected service."""

    relay: RelayProcess
    server_home: Path
    worker_home: Path
    service_url: str
    scratch: Path


def pair(target: AmeshHome, controller: AmeshHome) -> None:
    """Record each machine in the other's allow list, as `amesh listen`/`invite` would."""
    target_context, controller_context = load_context(target, {}), load_context(controller, {})
    for context, peer, role in (
        (target_context, controller_context, "controller"),
        (controller_context, target_context, "target"),
    ):
        context.allow_list.upsert(
            Device.new(
                device_id=peer.identity.device_id,
                public_key=peer.identity.public_key,
                friendly_name=peer.identity.friendly_name,
                role=role,
                added_at=now_timestamp(),
                protocol=2,
            )
        )


def clean_environ() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AMESH_", "AUTH_MESH_", "AMESH"))
    }


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
