"""``create_identity`` and ``load_context`` on real directories: files, modes, passphrases."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from authmesh.core._keyfile import KeyFile
from authmesh.core._keys import verify
from authmesh.store import AmeshHome, StoreError, create_identity, load_context
from authmesh.store._keystore import ENCRYPTED_FILE, KEYCHAIN, SECURE_ENCLAVE
from authmesh.store._passphrase import MIGRATION_NOTICE, js_trim
from tests.store.homes import isolated_env, mode_of, write_home
from tests.support.vectorfiles import section

CLI_VECTORS = {v["name"]: v for v in section("sdk-cli.json", "vectors")}


def test_init_lays_out_the_home_like_the_reference(home_root: Path, env: dict[str, str]) -> None:
    lines: list[str] = []
    result = create_identity("Auto", environ=env, progress=lines.append)
    # The detection lines of sdk-cli.json init_autodetect_linux_no_tpm, naming what is really
    # missing here: the tools, or (tools installed) a TPM that answers.
    missing = (
        "tpm2-tools not found"
        if shutil.which("tpm2_getcap", path=env.get("PATH")) is None
        else "tpm2-tools found, but the TPM did not answer tpm2_getcap"
    )
    assert lines == [
        f"  TPM 2.0           not available ({missing})",
        "  Encrypted file    selected (software fallback)",
    ]
    identity = result.identity
    assert result.backend_label == "Encrypted file"
    assert result.passphrase_file == home_root / ".passphrase"
    assert identity.key_alias == identity.device_id
    text = (home_root / "identity.json").read_text()
    assert list(json.loads(text)) == [
        "version", "deviceId", "keyAlias", "publicKey", "friendlyName", "createdAt",
        "storageBackend",
    ]  # fmt: skip
    assert not text.endswith("\n") and '\n  "version": "2.0.0",\n' in text
    passphrase = (home_root / ".passphrase").read_text()
    assert len(passphrase) == 64 and int(passphrase, 16) >= 0
    key_path = home_root / "keys" / f"{identity.device_id}.key.json"
    assert KeyFile.parse(key_path.read_text()).public_key == identity.public_key
    assert mode_of(home_root) == 0o700
    assert mode_of(home_root / "keys") == 0o700
    assert mode_of(home_root / "identity.json") == 0o600
    assert mode_of(key_path) == 0o600
    assert mode_of(home_root / ".passphrase") == 0o400
    assert not (home_root / "allow_list.json").exists()
    assert not any(p.name.endswith(".tmp") for p in home_root.rglob("*"))

    context = load_context(environ=env)
    assert context.identity == identity
    assert verify(context.signer.public_key, context.signer.sign(b"m"), b"m")


def test_key_is_unlocked_once_per_process(env: dict[str, str]) -> None:
    create_identity("once", backend=ENCRYPTED_FILE, environ=env)
    context = load_context(environ=env)
    started = time.perf_counter()
    signatures = [context.signer.sign(f"m{i}".encode()) for i in range(50)]
    # 50 signatures in far less than one Argon2id run (~0.2 s): no per-signature KDF (W8).
    assert time.perf_counter() - started < 0.2
    assert context.signer is context.signer
    assert len(set(signatures)) == 50


def test_existing_identity_needs_force_and_force_cleans_up(
    home_root: Path, env: dict[str, str]
) -> None:
    first = create_identity("one", environ=env).identity
    (home_root / "allow_list.json").write_text("{}")
    with pytest.raises(StoreError) as exists:
        create_identity("two", environ=env)
    assert exists.value.code == "identity_exists"
    assert str(exists.value) == "Identity already exists. Use --force to overwrite."

    second = create_identity("two", force=True, max_controllers=3, environ=env).identity
    assert second.device_id != first.device_id
    assert json.loads((home_root / "identity.json").read_text())["maxControllers"] == 3
    assert second.max_controllers == 3
    # W13: the old key file does not linger; the allow list is deleted as by the reference.
    assert sorted(p.name for p in (home_root / "keys").iterdir()) == [
        f"{second.device_id}.key.json"
    ]
    assert not (home_root / "allow_list.json").exists()


def test_env_passphrase_is_used_but_not_persisted(home_root: Path, env: dict[str, str]) -> None:
    secret_env = {**env, "AUTH_MESH_PASSPHRASE": "operator-supplied-secret"}
    result = create_identity("Env Pass", backend=ENCRYPTED_FILE, environ=secret_env)
    # W13: the reference writes it to .passphrase anyway (init_force_backend_env_passphrase).
    assert result.passphrase_file is None
    assert not (home_root / ".passphrase").exists()
    assert load_context(environ=secret_env).identity == result.identity
    with pytest.raises(StoreError) as missing:
        load_context(environ=env)
    assert missing.value.code == "no_passphrase"
    assert "AUTH_MESH_PASSPHRASE" in str(missing.value)


def test_wrong_passphrase_is_named_as_such(env: dict[str, str]) -> None:
    create_identity("x", environ=env)
    with pytest.raises(StoreError) as wrong:
        load_context(environ={**env, "AUTH_MESH_PASSPHRASE": "wrong"})
    # W20: the reference CLI reports "No identity found" here (list_wrong_passphrase_env).
    assert wrong.value.code == "wrong_passphrase"
    assert "passphrase is wrong" in str(wrong.value)


def test_no_identity(env: dict[str, str]) -> None:
    with pytest.raises(StoreError) as missing:
        load_context(environ=env)
    assert missing.value.code == "no_identity"
    assert str(missing.value) == "No identity found. Run `amesh init` first."


def test_corrupt_files_give_one_sentence(home_root: Path, env: dict[str, str]) -> None:
    identity = create_identity("x", environ=env).identity
    key_path = home_root / "keys" / f"{identity.device_id}.key.json"
    key_path.write_text('{"algorithm": "aes-256-gcm"}')
    with pytest.raises(StoreError) as broken_key:
        load_context(environ=env)
    assert broken_key.value.code == "key_invalid"
    key_path.unlink()
    with pytest.raises(StoreError) as missing_key:
        load_context(environ=env)
    assert missing_key.value.code == "key_missing"
    (home_root / "identity.json").write_text("{not json")
    with pytest.raises(StoreError) as broken_identity:
        load_context(environ=env)
    assert broken_identity.value.code == "identity_invalid"
    for error in (broken_key.value, missing_key.value, broken_identity.value):
        assert "\n" not in str(error) and str(error).endswith(".")


def test_legacy_passphrase_is_migrated_as_the_reference_does(tmp_path: Path) -> None:
    vector = CLI_VECTORS["legacy_passphrase_migration"]
    root = write_home(tmp_path / "home", vector["state_before"])
    context = load_context(environ=isolated_env(root))
    assert context.notices == (MIGRATION_NOTICE,)
    assert vector["stderr"] == MIGRATION_NOTICE + "\n"
    for name in ("identity.json", ".passphrase"):
        wanted = vector["state_after"][name]
        assert (root / name).read_text() == wanted["content"]
        assert mode_of(root / name) == int(wanted["mode"], 8)
    assert load_context(environ=isolated_env(root)).notices == ()


def test_passphrase_file_is_trimmed_like_javascript(tmp_path: Path, env: dict[str, str]) -> None:
    create_identity("x", environ=env)
    home = AmeshHome.from_env(env)
    value = home.passphrase_file.read_text()
    elsewhere = tmp_path / "secret"
    elsewhere.write_text("\ufeff \n" + value + "\u2028\t\n")
    context = load_context(environ={**env, "AMESH_PASSPHRASE_FILE": str(elsewhere)})
    assert context.identity.storage_backend == ENCRYPTED_FILE
    assert js_trim("\x1c a \x85") == "\x1c a \x85"  # Python's strip() would remove these


def test_home_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert AmeshHome.from_env({}).root == tmp_path / "user" / ".amesh"
    # W22: an empty AUTH_MESH_DIR means unset, not the current directory.
    assert AmeshHome.from_env({"AUTH_MESH_DIR": ""}).root == tmp_path / "user" / ".amesh"
    assert AmeshHome.from_env({"AMESH_DIR": "/a"}).root == Path("/a")
    both = AmeshHome.from_env({"AUTH_MESH_DIR": "/b", "AMESH_DIR": "/a"})
    assert both.root == Path("/b")
    assert both.passphrase_file == Path("/b/.passphrase")
    override = AmeshHome.from_env({"AUTH_MESH_DIR": "/b", "AMESH_PASSPHRASE_FILE": "/s/p"})
    assert override.passphrase_file == Path("/s/p")
    with pytest.raises(StoreError) as bad_alias:
        override.key_file("../evil")
    assert bad_alias.value.code == "invalid_argument"


@pytest.mark.parametrize("backend", [KEYCHAIN, SECURE_ENCLAVE])
def test_macos_backends_are_refused_off_macos(
    backend: str, home_root: Path, env: dict[str, str]
) -> None:
    with pytest.raises(StoreError) as unavailable:
        create_identity("mac", backend=backend, environ=env)
    assert unavailable.value.code == "backend_unavailable"
    assert "not available on this platform" in str(unavailable.value)
    assert not (home_root / "identity.json").exists()


def test_unknown_backend_and_bad_arguments(home_root: Path, env: dict[str, str]) -> None:
    with pytest.raises(StoreError) as unknown:
        create_identity("x", backend="floppy", environ=env)
    assert unknown.value.code == "backend_unsupported"
    assert str(unknown.value).startswith("Unsupported storage backend: floppy;")
    with pytest.raises(StoreError) as zero:
        create_identity("x", max_controllers=0, environ=env)
    assert zero.value.code == "invalid_argument"
    with pytest.raises(StoreError) as unnamed:
        create_identity("  ", environ=env)
    assert unnamed.value.code == "invalid_argument"
