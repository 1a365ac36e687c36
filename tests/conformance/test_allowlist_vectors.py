"""Allow-list seal, canonical JSON, HMAC material and encrypted key files against sdk.json."""

from __future__ import annotations

from typing import Any

import pytest

from authmesh.core import _allowlist as allowlist
from authmesh.core import _jsoncanon as jsoncanon
from authmesh.core._keyfile import KeyFile, KeyFileError, derive_file_key, encrypt_scalar
from authmesh.core._keys import PrivateKey, device_id
from tests.conformance.ledger import record
from tests.support.vectorfiles import section

RESEAL_CLOCK = "2026-04-10T12:00:00.000Z"

HKDF_VECTORS = section("sdk.json", "allow_list.hmac_key_derivation.vectors")
ALLOW_LIST_VECTORS = section("sdk.json", "allow_list.vectors")
STABLE_VECTORS = section("sdk.json", "stable_stringify.vectors")
MATERIAL_VECTORS = section("sdk.json", "hmac_key_material.vectors")
KEY_FILE_VECTORS = section("sdk.json", "encrypted_key_files.vectors")


@pytest.mark.parametrize("index", range(len(HKDF_VECTORS)))
def test_allow_list_key_derivation(index: int) -> None:
    vector = HKDF_VECTORS[index]
    material = bytes.fromhex(vector["hmac_key_material_hex"])
    key = allowlist.derive_allow_list_key(material, vector["device_id"])
    assert key.hex() == vector["allow_list_hmac_key_hex"]
    record("sdk.json", "allow_list.hmac_key_derivation.vectors", index)


@pytest.mark.parametrize("index", range(len(STABLE_VECTORS)))
def test_stable_stringify(index: int) -> None:
    vector = STABLE_VECTORS[index]
    value = jsoncanon.parse(vector["json_input"])
    assert jsoncanon.stable_stringify(value) == vector["stable"]
    assert jsoncanon.legacy_stringify(value) == vector["legacy_json_stringify"]
    record("sdk.json", "stable_stringify.vectors", index)


@pytest.mark.parametrize("index", range(len(MATERIAL_VECTORS)))
def test_software_hmac_material(index: int) -> None:
    vector = MATERIAL_VECTORS[index]
    scalar = bytes.fromhex(vector["private_key_hex"])
    material = allowlist.software_hmac_material(scalar, vector["key_alias"])
    assert material.hex() == vector["hmac_key_material_hex"]
    record("sdk.json", "hmac_key_material.vectors", index)


def _sealed_part(text: str) -> dict[str, Any]:
    top = jsoncanon.parse(text)
    assert isinstance(top, dict)
    return {name: top[name] for name in ("version", "devices", "updatedAt") if name in top}


def _is_reference_layout(text: str) -> bool:
    return jsoncanon.pretty_stringify(jsoncanon.parse(text)) == text


@pytest.mark.parametrize(
    "index", range(len(ALLOW_LIST_VECTORS)), ids=[v["name"] for v in ALLOW_LIST_VECTORS]
)
def test_allow_list_file(index: int) -> None:
    vector = ALLOW_LIST_VECTORS[index]
    key = allowlist.derive_allow_list_key(
        bytes.fromhex(vector["hmac_key_material_hex"]), vector["device_id"]
    )
    sealed = _sealed_part(vector["file"])
    assert jsoncanon.stable_stringify(sealed) == vector["canonical_stable"]
    assert jsoncanon.legacy_stringify(sealed) == vector["canonical_legacy"]

    outcome = vector["reference_read"]
    if vector["name"] == "missing_hmac_field":
        # W17: the reference crashes with a TypeError; we report an integrity failure.
        with pytest.raises(allowlist.IntegrityError, match="no HMAC seal"):
            allowlist.read(vector["file"], key, RESEAL_CLOCK)
    elif outcome["result"] == "error":
        with pytest.raises(allowlist.IntegrityError) as failure:
            allowlist.read(vector["file"], key, RESEAL_CLOCK)
        assert str(failure.value) == outcome["error"] == allowlist.INTEGRITY_FAILURE_MESSAGE
    else:
        result = allowlist.read(vector["file"], key, RESEAL_CLOCK)
        devices = [dict(device.fields) for device in result.allow_list.devices]
        # Same JavaScript value: numbers as doubles, keys in JS property order.
        assert jsoncanon.legacy_stringify(devices) == jsoncanon.legacy_stringify(outcome["devices"])
        stable_hmac = result.allow_list.seal(key)
        if outcome["result"] == "ok_resealed":
            assert result.needs_reseal
            assert result.allow_list.render(key) == outcome["file_after_read"]
        else:
            assert outcome["result"] == "ok_unchanged"
            assert not result.needs_reseal
            assert stable_hmac == vector["hmac_stable_b64"]
            if _is_reference_layout(vector["file"]) and vector["stored_hmac"] == stable_hmac:
                assert result.allow_list.render(key) == vector["file"]
    record("sdk.json", "allow_list.vectors", index)


def test_allow_list_hmacs_match_reference_for_both_canonical_forms() -> None:
    for vector in ALLOW_LIST_VECTORS:
        key = allowlist.derive_allow_list_key(
            bytes.fromhex(vector["hmac_key_material_hex"]), vector["device_id"]
        )
        sealed = _sealed_part(vector["file"])
        document = allowlist.AllowList.empty("x")
        stable = allowlist.AllowList(
            tuple(allowlist.Device(d) for d in sealed["devices"]),
            sealed["updatedAt"],
            {**document.top, "version": sealed["version"]},
        ).seal(key)
        assert stable == vector["hmac_stable_b64"], vector["name"]


@pytest.mark.parametrize(
    "index", range(len(KEY_FILE_VECTORS)), ids=[v["key_alias"] for v in KEY_FILE_VECTORS]
)
def test_encrypted_key_file(index: int) -> None:
    vector = KEY_FILE_VECTORS[index]
    expected = vector["expected"]
    key_file = KeyFile.parse(vector["file"])
    assert (
        derive_file_key(vector["passphrase"], key_file.salt).hex() == expected["argon2id_key_hex"]
    )
    scalar = key_file.decrypt(vector["passphrase"])
    assert scalar.hex() == expected["private_key_hex"]
    assert len(key_file.ciphertext) == expected["ciphertext_len"]

    private_key = PrivateKey.from_scalar(scalar)
    assert private_key.public_key_b64 == expected["public_key_b64"] == key_file.public_key
    assert device_id(private_key.public_key) == expected["device_id_from_public_key"]
    signature = private_key.sign(expected["sign_message_utf8"].encode())
    assert signature.hex() == expected["signature_hex"]
    material = allowlist.software_hmac_material(scalar, vector["key_alias"])
    assert material.hex() == expected["hmac_key_material_hex"]

    with pytest.raises(KeyFileError) as failure:
        key_file.decrypt(vector["passphrase"] + "x")
    assert str(failure.value) == expected["wrong_passphrase_sign_error"]

    # Our writer reproduces the reference file byte for byte given the same randomness.
    rewritten = encrypt_scalar(
        scalar, vector["passphrase"], key_file.public_key, salt=key_file.salt, nonce=key_file.nonce
    )
    assert rewritten.render() == vector["file"]
    record("sdk.json", "encrypted_key_files.vectors", index)
