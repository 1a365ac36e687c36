"""``allow_list.json`` through the store: operations, tampering, caching, concurrent writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from authmesh.core._allowlist import (
    PROTOCOL_V2,
    ROLE_CONTROLLER,
    ROLE_TARGET,
    Device,
    derive_allow_list_key,
)
from authmesh.core._keys import PrivateKey
from authmesh.store import AllowListStore, AmeshHome, StoreError, load_context, now_timestamp
from tests.store.homes import isolated_env, mode_of, write_home
from tests.support.vectorfiles import section

REFERENCE_HOME = section("sdk.json", "amesh_home.encrypted_file_home")
CLI_VECTORS = {v["name"]: v for v in section("sdk-cli.json", "vectors")}
PROCESSES = 2
ADDS_PER_PROCESS = 20


def new_device(role: str = ROLE_CONTROLLER, name: str = "peer", protocol: int = 1) -> Device:
    key = PrivateKey.generate()
    return Device.new(
        device_id=key.device_id,
        public_key=key.public_key_b64,
        friendly_name=name,
        role=role,
        added_at=now_timestamp(),
        protocol=protocol,
    )


def home_key(root: Path) -> bytes:
    context = load_context(environ=isolated_env(root))
    material = context.keystore.hmac_material(context.identity.key_alias)
    return derive_allow_list_key(material, context.identity.device_id)


@pytest.fixture
def reference_home(tmp_path: Path) -> Path:
    return write_home(tmp_path / "home", REFERENCE_HOME["files"])


@pytest.fixture
def store(reference_home: Path) -> AllowListStore:
    return load_context(environ=isolated_env(reference_home)).allow_list


def test_revoke_writes_the_bytes_the_reference_writes(reference_home: Path) -> None:
    vector = CLI_VECTORS["revoke_yes"]
    wanted = vector["state_after"]["allow_list.json"]
    fixed = wanted["content"].split('"updatedAt": "', 1)[1].split('"', 1)[0]
    pinned = AllowListStore(
        AmeshHome(reference_home), home_key(reference_home), clock=lambda: fixed
    )
    pinned.remove("am_zqljod6_GvA9EvUV")
    path = reference_home / "allow_list.json"
    assert path.read_text() == wanted["content"]
    assert mode_of(path) == 0o600


def test_add_find_upsert_remove(store: AllowListStore, reference_home: Path) -> None:
    controller = new_device(protocol=PROTOCOL_V2)
    store.add(controller)
    found = store.find_by_public_key(controller.public_key)
    assert found is not None and found.protocol == PROTOCOL_V2 and found.may_authenticate
    with pytest.raises(StoreError) as duplicate:
        store.add(controller)
    assert duplicate.value.code == "device_exists"

    renamed = Device({**controller.fields, "friendlyName": "renamed"})
    after = store.upsert(renamed)
    assert [d.friendly_name for d in after.devices if d.device_id == controller.device_id] == [
        "renamed"
    ]
    store.set_permissions(controller.device_id, {"shell": True})
    assert store.read().find(controller.device_id).shell_allowed  # type: ignore[union-attr]

    store.remove(controller.device_id)
    with pytest.raises(StoreError) as missing:
        store.remove(controller.device_id)
    assert missing.value.code == "device_not_found"
    assert str(missing.value) == f"Device {controller.device_id} not found in allow list."


def test_protocol_field_is_sealed_and_written_only_for_v2(
    store: AllowListStore, reference_home: Path
) -> None:
    v1, v2 = new_device(name="v1"), new_device(name="v2", protocol=PROTOCOL_V2)
    store.add(v1)
    store.add(v2)
    text = (reference_home / "allow_list.json").read_text()
    assert text.count('"protocol": 2') == 1
    # Downgrading the recorded protocol by editing the file breaks the seal.
    (reference_home / "allow_list.json").write_text(text.replace('"protocol": 2', '"protocol": 1'))
    with pytest.raises(StoreError) as tampered:
        store.read()
    assert tampered.value.code == "allow_list_tampered"


def test_replace_controllers_keeps_targets(store: AllowListStore) -> None:
    newcomer = new_device(name="new controller")
    after = store.replace_controllers(newcomer)
    roles = [(d.friendly_name, d.role) for d in after.devices]
    assert roles == [("Target One", ROLE_TARGET), ("new controller", ROLE_CONTROLLER)]
    assert after.count_by_role(ROLE_CONTROLLER) == 1


def test_invalid_entries_are_refused(store: AllowListStore) -> None:
    good = new_device()
    for fields in (
        {**good.fields, "publicKey": "AAAA"},
        {**good.fields, "deviceId": "am_notthisdevice0"},
        {**good.fields, "role": "admin"},
    ):
        with pytest.raises(StoreError) as refused:
            store.add(Device(fields))
        assert refused.value.code == "invalid_argument"


def test_tampered_file_is_refused_and_never_resealed(
    store: AllowListStore, reference_home: Path
) -> None:
    path = reference_home / "allow_list.json"
    tampered = CLI_VECTORS["list_tampered"]["state_after"]["allow_list.json"]["content"]
    path.write_text(tampered)
    for attempt in (store.read, store.snapshot, lambda: store.add(new_device())):
        with pytest.raises(StoreError) as refused:
            attempt()
        assert refused.value.code == "allow_list_tampered"
        assert str(refused.value).startswith("Allow list integrity check failed")
        assert "\n" not in str(refused.value)
    assert path.read_text() == tampered
    path.write_text("not json at all")
    with pytest.raises(StoreError) as garbage:
        store.snapshot()
    assert garbage.value.code == "allow_list_tampered"
    assert str(garbage.value).startswith("Allow list is malformed (not valid JSON);")


def test_snapshot_never_writes_and_follows_changes(
    store: AllowListStore, reference_home: Path
) -> None:
    path = reference_home / "allow_list.json"
    first = store.snapshot()
    assert store.snapshot() is first  # cached while the file is unchanged
    store.add(new_device(name="later"))
    assert [d.friendly_name for d in store.snapshot().devices][-1] == "later"
    path.unlink()
    assert store.snapshot().devices == ()
    assert not path.exists()  # the verification path never creates the file (W9)
    assert store.read().devices == ()
    assert path.exists() and mode_of(path) == 0o600  # the CLI path does, as the reference


def test_missing_roles_are_migrated_on_read(store: AllowListStore, reference_home: Path) -> None:
    # Like sdk.json allow_list "stable_seal_missing_role", sealed with this home's key.
    key = home_key(reference_home)
    current = store.read()
    stripped = Device({k: v for k, v in current.devices[0].fields.items() if k != "role"})
    unsealed = type(current)((stripped, *current.devices[1:]), current.updated_at, current.top)
    (reference_home / "allow_list.json").write_text(unsealed.render(key))
    assert store.snapshot().devices[0].role == ROLE_CONTROLLER  # in memory only
    assert '"role"' not in (reference_home / "allow_list.json").read_text().split("}")[0]
    store.read()
    assert store.read().devices[0].fields["role"] == ROLE_CONTROLLER


_WRITER = textwrap.dedent(
    """
    import sys
    from authmesh.core._allowlist import Device
    from authmesh.core._keys import PrivateKey
    from authmesh.store import load_context, now_timestamp

    context = load_context()
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for index in range(int(sys.argv[1])):
        key = PrivateKey.generate()
        context.allow_list.add(Device.new(
            device_id=key.device_id, public_key=key.public_key_b64,
            friendly_name=f"{sys.argv[2]}-{index}", role="controller",
            added_at=now_timestamp()))
    print("done", flush=True)
    """
)


def test_concurrent_processes_lose_no_update(reference_home: Path) -> None:
    env = isolated_env(reference_home)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(ADDS_PER_PROCESS), f"w{n}"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            assert writer.wait(timeout=60) == 0
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=10)
    devices = load_context(environ=env).allow_list.read().devices
    added = [d.friendly_name for d in devices if d.friendly_name.startswith("w")]
    assert len(added) == PROCESSES * ADDS_PER_PROCESS
    assert len(devices) == len(REFERENCE_HOME["expected"]["devices"]) + len(added)
    leftovers = [p.name for p in reference_home.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert AmeshHome(reference_home).lock_file.exists()
