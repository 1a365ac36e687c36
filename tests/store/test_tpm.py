"""The TPM 2.0 keystore against a real software TPM (swtpm) through tpm2-tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authmesh.core._allowlist import ROLE_CONTROLLER, Device
from authmesh.core._keys import CURVE_ORDER, PrivateKey, verify
from authmesh.store import StoreError, create_identity, load_context, now_timestamp
from authmesh.store._home import AmeshHome
from authmesh.store._keystore import TPM2
from authmesh.store._tpm import TpmKeyStore, TpmTools, persistent_handle, signature_to_raw
from tests.store.homes import mode_of


@pytest.fixture
def tpm_env(env: dict[str, str], swtpm: str) -> dict[str, str]:
    return {**env, "TPM2TOOLS_TCTI": swtpm}


def test_auto_detection_selects_the_tpm(home_root: Path, tpm_env: dict[str, str]) -> None:
    lines: list[str] = []
    result = create_identity("tpm box", environ=tpm_env, progress=lines.append)
    assert lines == ["  TPM 2.0           selected"]
    assert result.backend_label == "TPM 2.0"
    assert result.passphrase_file is None
    identity = result.identity
    assert identity.storage_backend == TPM2
    assert identity.key_alias == "am_init"
    assert not (home_root / ".passphrase").exists()
    assert mode_of(home_root / "keys") == 0o700


def test_signatures_verify_and_are_always_low_s(tpm_env: dict[str, str]) -> None:
    create_identity("tpm box", backend=TPM2, environ=tpm_env)
    context = load_context(environ=tpm_env)
    signer = context.signer
    assert signer.public_key_b64 == context.identity.public_key
    assert signer.device_id == context.identity.device_id
    for index in range(12):  # a TPM picks high S about half the time (W3)
        message = f"AMv1\nGET\n/api/{index}\n1743160800\nnonce\n".encode()
        signature = signer.sign(message)
        assert len(signature) == 64
        assert int.from_bytes(signature[32:], "big") <= CURVE_ORDER // 2
        assert verify(signer.public_key, signature, message)
        assert not verify(signer.public_key, signature, message + b"x")


def test_allow_list_uses_the_hmac_file(home_root: Path, tpm_env: dict[str, str]) -> None:
    create_identity("tpm box", backend=TPM2, environ=tpm_env)
    context = load_context(environ=tpm_env)
    hmac_file = home_root / "keys" / "am_init.hmac"
    assert mode_of(hmac_file) == 0o600
    assert len(hmac_file.read_bytes()) == 32
    peer = PrivateKey.generate()
    context.allow_list.add(
        Device.new(
            device_id=peer.device_id,
            public_key=peer.public_key_b64,
            friendly_name="controller",
            role=ROLE_CONTROLLER,
            added_at=now_timestamp(),
        )
    )
    reloaded = load_context(environ=tpm_env)
    assert reloaded.allow_list.find_by_public_key(peer.public_key_b64) is not None


def test_force_reinit_evicts_the_old_key(tpm_env: dict[str, str]) -> None:
    first = create_identity("one", backend=TPM2, environ=tpm_env).identity
    with pytest.raises(StoreError) as exists:
        create_identity("two", backend=TPM2, environ=tpm_env)
    assert exists.value.code == "identity_exists"
    # The reference cannot re-create a TPM identity (the am_init handle stays occupied, W13).
    second = create_identity("two", backend=TPM2, force=True, environ=tpm_env).identity
    assert second.public_key != first.public_key
    context = load_context(environ=tpm_env)
    assert verify(context.signer.public_key, context.signer.sign(b"m"), b"m")


def test_keystore_interface_and_handles(home_root: Path, tpm_env: dict[str, str]) -> None:
    store = TpmKeyStore(AmeshHome(home_root), TpmTools(tpm_env))
    public_key = store.generate_and_store("am_pending")
    assert store.public_key("am_pending") == public_key
    persistent = TpmTools(tpm_env).run("getcap", "handles-persistent")
    assert persistent_handle("am_pending") in persistent.lower()
    store.delete("am_pending")
    with pytest.raises(StoreError) as gone:
        store.public_key("am_pending")
    assert gone.value.code == "tpm_failed"


def test_unreachable_tpm_and_missing_tools_fail_with_one_sentence(env: dict[str, str]) -> None:
    assert not TpmTools(env).available()
    with pytest.raises(StoreError) as unreachable:
        create_identity("x", backend=TPM2, environ=env)
    assert unreachable.value.code == "tpm_failed"
    assert "TPM2TOOLS_TCTI" in str(unreachable.value)
    no_tools = {**env, "PATH": "/nonexistent"}
    with pytest.raises(StoreError) as missing:
        create_identity("x", backend=TPM2, force=True, environ=no_tools)
    assert missing.value.code == "backend_unavailable"
    assert "tpm2-tools are not installed" in str(missing.value)


def test_signature_formats_from_every_tpm2_tools_version() -> None:
    key = PrivateKey.generate()
    raw = key.sign(b"m")
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    high_s = r + (CURVE_ORDER - s).to_bytes(32, "big")
    assert signature_to_raw(high_s) == raw  # plain output, normalised (W3)
    der = encode_dss_signature(int.from_bytes(r, "big"), CURVE_ORDER - s)
    assert signature_to_raw(der) == raw  # tpm2-tools 5.x "-f plain" writes DER
    tpmt = b"\x00\x18\x00\x0b\x00\x20" + r + b"\x00\x20" + high_s[32:]
    assert signature_to_raw(tpmt) == raw  # tpm2-tools 4.x TPMT_SIGNATURE
