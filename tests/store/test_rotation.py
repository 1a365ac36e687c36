"""Rotating this device's key in its keystore: re-sealing, history, grace, crash recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from authmesh.core._allowlist import ROLE_CONTROLLER, Device
from authmesh.core._keys import PrivateKey, verify
from authmesh.store import StoreError, create_identity, load_context, now_timestamp
from authmesh.store import _rotation as store_rotation
from authmesh.store._home import AmeshHome
from authmesh.store._keystore import ENCRYPTED_FILE, TPM2
from authmesh.store._rotation import load_state, prune_retired_keys, rotate_identity
from authmesh.store._tpm import TpmTools, persistent_handle

DAY = 86_400


def _add_peer(env: dict[str, str]) -> str:
    peer = PrivateKey.generate()
    load_context(environ=env).allow_list.add(
        Device.new(
            device_id=peer.device_id,
            public_key=peer.public_key_b64,
            friendly_name="peer",
            role=ROLE_CONTROLLER,
            added_at=now_timestamp(),
        )
    )
    return peer.public_key_b64


@pytest.fixture
def file_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "AUTH_MESH_PASSPHRASE": "correct horse"}


def test_rotation_switches_the_identity_and_reseals_the_allow_list(
    home_root: Path, file_env: dict[str, str]
) -> None:
    create_identity("box", backend=ENCRYPTED_FILE, environ=file_env)
    peer = _add_peer(file_env)
    before = load_context(environ=file_env)
    identity, statement = rotate_identity(
        before.home, before.keystore, grace_seconds=DAY, clock=lambda: 1_800_000_000
    )
    after = load_context(environ=file_env)
    assert after.identity == identity
    assert identity.public_key == statement.new_key != before.identity.public_key
    assert identity.device_id == statement.new_device_id
    assert identity.friendly_name == "box" and identity.created_at == before.identity.created_at
    assert after.allow_list.read().find_by_public_key(peer) is not None  # re-sealed, verifies
    assert verify(after.signer.public_key, after.signer.sign(b"m"), b"m")
    state = load_state(after.home)
    assert state.chain == (statement,) and state.seq == 1
    [retired] = state.retired
    assert retired.public_key == before.identity.public_key
    assert retired.destroy_after == 1_800_000_000 + DAY
    old_file = home_root / "keys" / f"{before.identity.key_alias}.key.json"
    assert old_file.exists()  # kept for the grace period

    assert prune_retired_keys(after.home, after.keystore, identity, 1_800_000_000 + DAY) == (
        retired,
    )
    assert not old_file.exists()
    assert load_state(after.home).retired == ()
    assert load_state(after.home).chain == (statement,)  # history stays for peers


def test_an_interrupted_rotation_completes_on_the_next_load(
    file_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_identity("box", backend=ENCRYPTED_FILE, environ=file_env)
    peer = _add_peer(file_env)
    context = load_context(environ=file_env)

    def crash(*args: object) -> None:
        raise StoreError("io_error", "disk full")

    monkeypatch.setattr(store_rotation, "save_identity", crash)
    with pytest.raises(StoreError):
        rotate_identity(context.home, context.keystore)
    monkeypatch.undo()
    # The allow list is already sealed for the new key, identity.json still names the old
    # one: loading finishes the rotation instead of reporting tampering.
    recovered = load_context(environ=file_env)
    assert recovered.identity.public_key != context.identity.public_key
    assert recovered.allow_list.read().find_by_public_key(peer) is not None
    assert not (context.home.root / "rotation.pending.json").exists()
    assert load_state(recovered.home).seq == 1


def test_negative_grace_is_refused(file_env: dict[str, str]) -> None:
    create_identity("box", backend=ENCRYPTED_FILE, environ=file_env)
    context = load_context(environ=file_env)
    with pytest.raises(StoreError) as error:
        rotate_identity(context.home, context.keystore, grace_seconds=-1)
    assert error.value.code == "invalid_argument"


def test_tpm_rotation_evicts_the_old_key(tpm_env: dict[str, str]) -> None:
    create_identity("tpm box", backend=TPM2, environ=tpm_env)
    peer = _add_peer(tpm_env)
    context = load_context(environ=tpm_env)
    identity, _ = rotate_identity(context.home, context.keystore, grace_seconds=0)
    assert identity.key_alias.startswith("am_r")
    persistent = TpmTools(tpm_env).run("getcap", "handles-persistent").lower()
    assert persistent_handle(identity.key_alias) in persistent
    assert persistent_handle("am_init") not in persistent
    assert not (context.home.root / "keys" / "am_init.hmac").exists()
    after = load_context(AmeshHome(context.home.root), tpm_env)
    assert after.allow_list.read().find_by_public_key(peer) is not None
    assert verify(after.signer.public_key, after.signer.sign(b"m"), b"m")


@pytest.fixture
def tpm_env(env: dict[str, str], swtpm: str) -> dict[str, str]:
    return {**env, "TPM2TOOLS_TCTI": swtpm}
