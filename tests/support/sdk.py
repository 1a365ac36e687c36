"""SDK test tools: vector keys, the middleware vectors, a trusted allow-list store."""

from __future__ import annotations

from pathlib import Path

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._keys import PrivateKey
from authmesh.store import AllowListStore, AmeshHome
from tests.support.vectorfiles import load

MIDDLEWARE = load("middleware.json")


def vector_key(name: str) -> PrivateKey:
    """K1 (controller), K2 (unknown) or K3 (target) of middleware.json."""
    return PrivateKey.from_scalar(bytes.fromhex(MIDDLEWARE["keys"][name]["private_key_hex"]))


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
