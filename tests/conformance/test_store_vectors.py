"""Reference-written amesh homes and the TPM parsers (sdk.json ``amesh_home``, ``tpm``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authmesh.core._allowlist import derive_allow_list_key
from authmesh.core._jsoncanon import legacy_stringify
from authmesh.core._keys import PrivateKey
from authmesh.store import AmeshHome, StoreError, load_context
from authmesh.store._tpm import parse_tpmt_signature, pem_to_compressed, persistent_handle
from tests.conformance.ledger import record
from tests.store.homes import isolated_env, write_home
from tests.support.vectorfiles import section

ENCRYPTED_HOME = section("sdk.json", "amesh_home.encrypted_file_home")
HARDWARE_HOME = section("sdk.json", "amesh_home.hardware_home")
HANDLES = section("sdk.json", "tpm.handles")
TPMT = section("sdk.json", "tpm.tpmt_signature")
PEMS = section("sdk.json", "tpm.pem_to_compressed")


def test_encrypted_file_home_written_by_the_reference(tmp_path: Path) -> None:
    root = write_home(tmp_path / "home", ENCRYPTED_HOME["files"])
    expected = ENCRYPTED_HOME["expected"]
    context = load_context(environ=isolated_env(root))  # passphrase from the .passphrase file

    assert context.identity.device_id == expected["device_id"]
    assert context.identity.key_alias == expected["key_alias"]
    signer = context.signer
    assert isinstance(signer, PrivateKey)
    assert signer.scalar().hex() == expected["private_key_hex"]
    material = context.keystore.hmac_material(context.identity.key_alias)
    assert material.hex() == expected["hmac_key_material_hex"]
    allow_list_key = derive_allow_list_key(material, context.identity.device_id)
    assert allow_list_key.hex() == expected["allow_list_hmac_key_hex"]
    signature = signer.sign(expected["sign_message_utf8"].encode())
    assert signature.hex() == expected["signature_hex"]

    assert expected["allow_list_verifies"]
    before = (root / "allow_list.json").read_bytes()
    devices = context.allow_list.read().devices
    assert (root / "allow_list.json").read_bytes() == before  # verified, not rewritten
    assert len(devices) == len(expected["devices"])
    for index, (device, wanted) in enumerate(zip(devices, expected["devices"], strict=True)):
        assert legacy_stringify(dict(device.fields)) == legacy_stringify(wanted)
        record("sdk.json", "amesh_home.encrypted_file_home.expected.devices", index)


def test_hardware_home_allow_list_verifies_without_the_tpm(tmp_path: Path) -> None:
    root = write_home(tmp_path / "home", HARDWARE_HOME["files"])
    expected = HARDWARE_HOME["expected"]
    context = load_context(environ=isolated_env(root))
    alias = context.identity.key_alias
    assert alias == "am_init"
    assert context.keystore.hmac_material(alias).hex() == expected["hmac_key_material_hex"]
    key = derive_allow_list_key(
        bytes.fromhex(expected["hmac_key_material_hex"]), context.identity.device_id
    )
    assert key.hex() == expected["allow_list_hmac_key_hex"]
    assert persistent_handle(alias) == expected["tpm_persistent_handle"]
    before = (root / "allow_list.json").read_bytes()
    assert [d.device_id for d in context.allow_list.read().devices] == ["am_zqljod6_GvA9EvUV"]
    assert (root / "allow_list.json").read_bytes() == before
    # The key itself lives in a TPM we do not have: signing fails with one clear sentence.
    with pytest.raises(StoreError) as failure:
        context.signer.sign(b"x")
    assert failure.value.code in {"tpm_failed", "backend_unavailable"}
    assert "\n" not in str(failure.value)
    assert AmeshHome.from_env(isolated_env(root)).root == root


@pytest.mark.parametrize("index", range(len(HANDLES)))
def test_tpm_persistent_handles(index: int) -> None:
    vector = HANDLES[index]
    assert persistent_handle(vector["key_alias"]) == vector["handle"]
    record("sdk.json", "tpm.handles", index)


@pytest.mark.parametrize("index", range(len(TPMT)))
def test_tpmt_signature_parser(index: int) -> None:
    vector = TPMT[index]
    data = bytes.fromhex(vector["tpmt_hex"])
    if "error" in vector:
        with pytest.raises(StoreError) as failure:
            parse_tpmt_signature(data)
        assert str(failure.value) == vector["error"]
    else:
        assert parse_tpmt_signature(data).hex() == vector["raw_hex"]
    record("sdk.json", "tpm.tpmt_signature", index)


@pytest.mark.parametrize("index", range(len(PEMS)))
def test_tpm_pem_to_compressed(index: int) -> None:
    vector = PEMS[index]
    assert pem_to_compressed(vector["pem"]).hex() == vector["compressed_hex"]
    record("sdk.json", "tpm.pem_to_compressed", index)
