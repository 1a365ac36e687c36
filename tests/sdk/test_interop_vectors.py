"""sdk.json signing/verification vectors at request level, in both directions.

* reference -> ours: each reference signature over a canonical request string is
  sent as that request (header, method, path, body) to our :class:`Verifier`,
  which must accept it; each verification vector over such a request is accepted
  exactly when the reference verifier said ``valid``;
* ours -> reference: our :class:`RequestSigner`, given the same key, clock and nonce,
  writes the reference's signature byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authmesh.core._b64 import b64url_encode
from authmesh.core._canonical import body_sha256
from authmesh.core._header import AuthHeader
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Rejection, Verifier
from tests.support.sdk import trusted_store
from tests.support.vectorfiles import section

BODIES = {body_sha256(b""): b"", body_sha256(b'{"amount":100}'): b'{"amount":100}'}
KEYS = {
    k["public_key_compressed_hex"]: PrivateKey.from_scalar(bytes.fromhex(k["private_key_hex"]))
    for k in section("sdk.json", "keys").values()
    if isinstance(k, dict)
}


def _request(message: str) -> tuple[str, str, str, str, bytes] | None:
    """(method, path, ts, nonce, body) of a canonical v1 string with a known body."""
    parts = message.split("\n")
    if len(parts) != 6 or parts[0] != "AMv1" or parts[5] not in BODIES:
        return None
    _, method, path, ts, nonce, body_hash = parts
    return method, path, ts, nonce, BODIES[body_hash]


def _verifier(tmp_path: Path, key: PrivateKey, ts: str) -> Verifier:
    store = trusted_store(tmp_path / "home", [(key, "controller", 1)])
    now = int(ts)
    return Verifier(store, nonce_store=InMemoryNonceStore(clock=lambda: now), clock=lambda: now)


SIGNING = [v for v in section("sdk.json", "signing.vectors") if _request(v["message_utf8"])]


@pytest.mark.parametrize("vector", SIGNING, ids=[str(i) for i in range(len(SIGNING))])
def test_reference_signatures_verify_and_ours_match(vector: dict[str, Any], tmp_path: Path) -> None:
    request = _request(vector["message_utf8"])
    assert request is not None
    method, path, ts, nonce, body = request
    key = PrivateKey.from_scalar(bytes.fromhex(vector["private_key_hex"]))
    header = AuthHeader("1", key.public_key_b64, ts, nonce, vector["signature_b64url"]).format()
    device = _verifier(tmp_path, key, ts).verify(method, path, header, None, body)
    assert device.device_id == key.device_id

    ours = RequestSigner(key, clock=lambda: int(ts), nonce=lambda: nonce)
    assert ours.authorization(method, path, body_sha256(body)) == header


VERIFICATION = [
    v
    for v in section("sdk.json", "verification.vectors")
    if _request(v["message_utf8"]) and v["public_key_hex"] in KEYS
]


@pytest.mark.parametrize("vector", VERIFICATION, ids=[v["name"] for v in VERIFICATION])
def test_verification_vectors_as_requests(vector: dict[str, Any], tmp_path: Path) -> None:
    request = _request(vector["message_utf8"])
    assert request is not None
    method, path, ts, nonce, body = request
    key = KEYS[vector["public_key_hex"]]
    signature = b64url_encode(bytes.fromhex(vector["signature_hex"]))
    header = f'AuthMesh v="1",id="{key.public_key_b64}",ts="{ts}",nonce="{nonce}",sig="{signature}"'
    verifier = _verifier(tmp_path, key, ts)
    if vector["expected_valid"]:
        verifier.verify(method, path, header, None, body)
    else:
        with pytest.raises(Rejection) as caught:
            verifier.verify(method, path, header, None, body)
        assert caught.value.status in (400, 401)  # an empty sig is a malformed header
