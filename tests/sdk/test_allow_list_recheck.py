"""The verifier checks the allow-list file at most once per interval, and never longer.

A revoked device must be refused within ``allow_list_recheck_seconds`` of the file
changing; a tampered file must fail every lookup from the first check that sees it
until it is fixed (no fallback to the last good list).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._trusted_keys import TrustedKeys
from authmesh.sdk._verifier import Rejection, Verifier
from authmesh.store import StoreError
from tests.support.sdk import trusted_store


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> PrivateKey:
    return PrivateKey.generate()


def test_revocation_takes_effect_within_the_interval(tmp_path: Path, key: PrivateKey) -> None:
    store = trusted_store(tmp_path, [(key, "controller", 1)])
    clock = ManualClock()
    trusted = TrustedKeys(store, recheck_seconds=1.0, monotonic=clock)
    assert trusted.lookup(key.public_key_b64) is not None
    trusted_store(tmp_path, [])  # another process revokes the device
    clock.now += 0.999
    assert trusted.lookup(key.public_key_b64) is not None  # still inside the interval
    clock.now += 0.001
    assert trusted.lookup(key.public_key_b64) is None


def test_tampering_fails_every_lookup_until_fixed(tmp_path: Path, key: PrivateKey) -> None:
    store = trusted_store(tmp_path, [(key, "controller", 1)])
    allow_list = tmp_path / "allow_list.json"
    good = allow_list.read_text(encoding="utf-8")
    clock = ManualClock()
    trusted = TrustedKeys(store, recheck_seconds=1.0, monotonic=clock)
    assert trusted.lookup(key.public_key_b64) is not None
    allow_list.write_text(good.replace("Device 0", "Device O"), encoding="utf-8")
    clock.now += 1.0
    for _attempt in range(2):  # the failed check is not cached as fresh
        with pytest.raises(StoreError):
            trusted.lookup(key.public_key_b64)
    allow_list.write_text(good, encoding="utf-8")
    assert trusted.lookup(key.public_key_b64) is not None


def test_zero_interval_checks_on_every_request(tmp_path: Path, key: PrivateKey) -> None:
    store = trusted_store(tmp_path, [(key, "controller", 1)])
    verifier = Verifier(store, nonce_store=InMemoryNonceStore(), allow_list_recheck_seconds=0)
    signer = RequestSigner(key)
    header = signer.authorization("GET", "/", EMPTY_BODY_SHA256)
    assert verifier.verify("GET", "/", header, "127.0.0.1", b"").device_id == key.device_id
    trusted_store(tmp_path, [])
    header = signer.authorization("GET", "/", EMPTY_BODY_SHA256)
    with pytest.raises(Rejection) as refused:
        verifier.verify("GET", "/", header, "127.0.0.1", b"")
    assert refused.value.status == 401


def test_negative_interval_is_refused(tmp_path: Path, key: PrivateKey) -> None:
    store = trusted_store(tmp_path, [(key, "controller", 1)])
    with pytest.raises(ValueError, match="recheck interval"):
        Verifier(store, allow_list_recheck_seconds=-1)


def test_a_store_failure_while_resolving_a_rotation_is_a_500(
    tmp_path: Path, key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving a rotation chain reads the allow list again; its failure used to escape the
    verifier as a raw exception."""
    store = trusted_store(tmp_path, [(key, "controller", 1)])
    verifier = Verifier(store, nonce_store=InMemoryNonceStore(), allow_list_recheck_seconds=60)

    def tampered(*args: object) -> None:
        raise StoreError("allow_list_tampered", "The allow list was modified.")

    monkeypatch.setattr(verifier._rotation, "resolve", tampered)
    newcomer = RequestSigner(PrivateKey.generate())
    header = newcomer.authorization("GET", "/", EMPTY_BODY_SHA256)
    with pytest.raises(Rejection) as refused:
        verifier.begin("GET", "/", header, "127.0.0.1", "chain")
    assert (refused.value.status, refused.value.error) == (500, "internal_error")
