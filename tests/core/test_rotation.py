"""Rotation statements and the allow-list rules, on the pure core with a fixed clock."""

from __future__ import annotations

import dataclasses

import pytest

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._keys import PrivateKey
from authmesh.core._rotation import (
    MAX_CHAIN,
    RotationError,
    RotationStatement,
    apply_chain,
    create_statement,
    decode_chain,
    encode_chain,
    key_age_seconds,
    key_expired,
    key_seq,
    signing_message,
)

NOW = 1_790_000_000.0
DAY = 86_400


def _keys(count: int) -> list[PrivateKey]:
    return [PrivateKey.from_scalar(bytes([index + 1]) * 32) for index in range(count)]


K0, K1, K2, K3 = _keys(4)
OTHER = PrivateKey.from_scalar(bytes([99]) * 32)


def _entry(key: PrivateKey, **extra: object) -> Device:
    device = Device.new(
        device_id=key.device_id,
        public_key=key.public_key_b64,
        friendly_name="ci runner",
        role="controller",
        added_at="2026-09-01T00:00:00.000Z",
        protocol=2,
        shell=True,
    )
    return Device({**device.fields, **extra})


def _list(*devices: Device) -> AllowList:
    allow_list = AllowList.empty("2026-09-01T00:00:00.000Z")
    for device in devices:
        allow_list = allow_list.with_device(device, "2026-09-01T00:00:00.000Z")
    return allow_list


S1 = create_statement(K0, K1, 1, int(NOW) - 100)
S2 = create_statement(K1, K2, 2, int(NOW) - 50)


def test_signing_message_is_domain_separated() -> None:
    message = signing_message("am_x", "a", "b", 3, 4)
    assert message == b"AMrot1\nam_x\na\nb\n3\n4"
    assert not message.startswith((b"AMv1", b"AMv2"))


def test_statement_round_trips_through_the_header_form() -> None:
    header = encode_chain([S1, S2])
    assert decode_chain(header) == (S1, S2)
    assert RotationStatement.from_json(S1.as_json()) == S1


def test_rotation_keeps_name_role_grants_protocol_and_position() -> None:
    bystander = _entry(OTHER)
    allow_list = _list(_entry(K0), bystander)
    rotated, entry = apply_chain(allow_list, [S1], NOW)
    assert [d.device_id for d in rotated.devices] == [K1.device_id, OTHER.device_id]
    assert entry.public_key == K1.public_key_b64
    assert (entry.friendly_name, entry.role, entry.protocol) == ("ci runner", "controller", 2)
    assert entry.shell_allowed and entry.added_at == "2026-09-01T00:00:00.000Z"
    assert key_seq(entry) == 1
    assert rotated.find_by_public_key(K0.public_key_b64) is None
    assert rotated.updated_at.startswith("2026-")


def test_a_server_that_missed_a_rotation_takes_the_chain_in_order() -> None:
    rotated, entry = apply_chain(_list(_entry(K0)), [S1, S2], NOW)
    assert entry.public_key == K2.public_key_b64 and key_seq(entry) == 2
    assert [d.public_key for d in rotated.devices] == [K2.public_key_b64]


def test_an_applied_chain_is_idempotent() -> None:
    rotated, _ = apply_chain(_list(_entry(K0)), [S1, S2], NOW)
    again, entry = apply_chain(rotated, [S1, S2], NOW)
    assert again is rotated and entry.public_key == K2.public_key_b64


def test_a_gap_is_refused() -> None:
    with pytest.raises(RotationError) as error:
        apply_chain(_list(_entry(K0)), [S2], NOW)
    assert error.value.reason == "unknown_key"
    with pytest.raises(RotationError) as error:
        apply_chain(_list(_entry(K0)), [S1, create_statement(K1, K2, 3, int(NOW))], NOW)
    assert error.value.reason == "gap"


def test_a_statement_replayed_after_the_entry_moved_on_is_refused() -> None:
    moved, _ = apply_chain(_list(_entry(K0)), [S1, S2], NOW)
    with pytest.raises(RotationError) as error:
        apply_chain(moved, [S1], NOW)
    assert error.value.reason == "unknown_key"


def test_a_revoked_key_never_rotates() -> None:
    revoked = _list(_entry(K0), _entry(OTHER)).without_device(K0.device_id, "x")
    with pytest.raises(RotationError) as error:
        apply_chain(revoked, [S1], NOW)
    assert error.value.reason == "unknown_key"


def test_a_fork_from_the_old_key_loses_to_the_first_rotation() -> None:
    rotated, _ = apply_chain(_list(_entry(K0)), [S1], NOW)
    fork = create_statement(K0, K3, 1, int(NOW))
    with pytest.raises(RotationError):
        apply_chain(rotated, [fork], NOW)
    assert rotated.find_by_public_key(K1.public_key_b64) is not None


def test_a_statement_with_the_wrong_sequence_is_refused() -> None:
    entry = _entry(K0, keySeq=4)
    with pytest.raises(RotationError) as error:
        apply_chain(_list(entry), [S1], NOW)
    assert error.value.reason == "out_of_order"


@pytest.mark.parametrize(
    "change",
    [
        {"newKey": K3.public_key_b64},
        {"seq": 2},
        {"ts": 1},
        {"newSig": create_statement(K0, K1, 1, 5).new_sig},
    ],
)
def test_forged_statements_are_refused(change: dict[str, object]) -> None:
    forged = dataclasses.replace(S1, **{_ATTR[k]: v for k, v in change.items()})
    with pytest.raises(RotationError) as error:
        apply_chain(_list(_entry(K0)), [forged], NOW)
    assert error.value.reason in ("bad_signature", "malformed", "out_of_order")


_ATTR = {"newKey": "new_key", "seq": "seq", "ts": "ts", "newSig": "new_sig"}


def test_a_statement_signed_only_by_the_old_key_is_refused() -> None:
    # Without the new key's signature anyone holding the old key could name any key.
    stolen = create_statement(K0, K3, 1, int(NOW))
    forged = dataclasses.replace(stolen, new_key=OTHER.public_key_b64)
    with pytest.raises(RotationError):
        apply_chain(_list(_entry(K0)), [forged], NOW)


def test_future_statements_and_oversized_chains_are_refused() -> None:
    future = create_statement(K0, K1, 1, int(NOW) + 3600)
    with pytest.raises(RotationError) as error:
        apply_chain(_list(_entry(K0)), [future], NOW)
    assert error.value.reason == "future"
    with pytest.raises(RotationError):
        decode_chain(",".join([S1.encode()] * (MAX_CHAIN + 1)))
    with pytest.raises(RotationError):
        decode_chain("not-a-statement")


def test_a_new_key_already_trusted_elsewhere_is_refused() -> None:
    with pytest.raises(RotationError) as error:
        apply_chain(_list(_entry(K0), _entry(K1)), [S1], NOW)
    assert error.value.reason in ("conflict", "out_of_order")


def test_key_age_and_expiry_follow_the_clock() -> None:
    entry = _entry(K0, maxKeyAge=90 * DAY)
    added = key_age_seconds(entry, NOW)
    assert added is not None and added > 0
    created = NOW - added
    assert not key_expired(entry, created + 90 * DAY)
    assert key_expired(entry, created + 90 * DAY + 1)
    assert not key_expired(_entry(K0), created + 10_000 * DAY)
    _, rotated = apply_chain(_list(entry), [S1], NOW)
    assert key_age_seconds(rotated, NOW) == 100
    assert not key_expired(rotated, NOW + 89 * DAY)
    assert key_expired(Device({**entry.fields, "addedAt": "garbage"}), NOW)


def test_an_expired_key_cannot_vouch_for_a_successor() -> None:
    expired = _entry(K0, maxKeyAge=DAY, addedAt="2020-01-01T00:00:00.000Z")
    with pytest.raises(RotationError) as error:
        apply_chain(_list(expired), [S1], NOW)
    assert error.value.reason == "expired"
