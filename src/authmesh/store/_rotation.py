"""Rotating this device's key, and applying peers' rotations to the allow list.

``rotate_identity`` (``amesh rotate``) creates the new key in the identity's own
backend, signs the statement with both keys, and switches the identity. Everything the
identity's key seals moves with it: the allow list is re-sealed under the new key.

Crash safety: the first write is ``rotation.pending.json`` (the statement and both key
aliases); :func:`finish_rotation` then re-seals the allow list, records the statement in
``rotation.json``, rewrites ``identity.json`` and removes the pending file. Each step is
idempotent and :func:`load_context <authmesh.store._context.load_context>` runs it again
for a pending file it finds, so an interrupted rotation always completes.

``rotation.json`` ([ours], never read by the reference) holds the last
:data:`~authmesh.core._rotation.MAX_CHAIN` statements, which clients send to servers that
have not yet switched, and the retired keys with the time after which they are
destroyed (TPM: evicted). It needs no seal: statements are signed by both keys, and a
retired alias is destroyed only when it is not the identity's current key.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from authmesh.core import (
    AllowList,
    AllowListError,
    Device,
    RotationError,
    RotationStatement,
)
from authmesh.core._allowlist import derive_allow_list_key, format_timestamp, read
from authmesh.core._jsoncanon import JsonError, JsonValue, parse, pretty_stringify
from authmesh.core._rotation import MAX_AGE_FIELD, MAX_CHAIN, apply_chain, create_statement
from authmesh.store._allowlist_store import AllowListStore
from authmesh.store._errors import StoreError
from authmesh.store._files import atomic_write, exclusive_lock, read_text, remove_file
from authmesh.store._home import AmeshHome
from authmesh.store._identity import Identity, load_identity, save_identity
from authmesh.store._keystore import KeyStore, create_key
from authmesh.store._tpm import persistent_handle

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "RetiredKey",
    "RotationState",
    "accept_rotation",
    "finish_rotation",
    "load_state",
    "prune_retired_keys",
    "rotate_identity",
    "set_max_key_age",
]

DEFAULT_GRACE_SECONDS = 7 * 86_400
_OWNER_PERSISTENT_END = 0x81800000
_STATE_VERSION = 1


def _invalid(name: str) -> StoreError:
    return StoreError(
        "rotation_state_invalid",
        f"{name} is malformed; restore it from a backup or remove it (rotations already "
        "made stay valid; peers that missed them must then be paired again).",
    )


@dataclass(frozen=True)
class RetiredKey:
    """A previous identity key kept until ``destroy_after`` (Unix seconds)."""

    alias: str
    public_key: str
    destroy_after: int

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "alias": self.alias,
            "publicKey": self.public_key,
            "destroyAfter": self.destroy_after,
        }


@dataclass(frozen=True)
class RotationState:
    """``rotation.json``: recent statements (oldest first) and retired keys."""

    chain: tuple[RotationStatement, ...] = ()
    retired: tuple[RetiredKey, ...] = ()

    @property
    def seq(self) -> int:
        return self.chain[-1].seq if self.chain else 0

    def render(self) -> str:
        return pretty_stringify(
            {
                "version": _STATE_VERSION,
                "chain": [statement.as_json() for statement in self.chain],
                "retired": [key.as_json() for key in self.retired],
            }
        )

    @classmethod
    def parse(cls, text: str) -> RotationState:
        try:
            document = parse(text)
            assert isinstance(document, dict)
            chain = tuple(RotationStatement.from_json(item) for item in document["chain"])
            retired = tuple(
                RetiredKey(str(item["alias"]), str(item["publicKey"]), int(item["destroyAfter"]))
                for item in document["retired"]
            )
        except (JsonError, RotationError, AssertionError, KeyError, TypeError, ValueError):
            raise _invalid("rotation.json") from None
        return cls(chain, retired)


def load_state(home: AmeshHome) -> RotationState:
    text = read_text(home.root / "rotation.json")
    return RotationState() if text is None else RotationState.parse(text)


def _save_state(home: AmeshHome, state: RotationState) -> None:
    atomic_write(home.root / "rotation.json", state.render().encode("utf-8"))


@dataclass(frozen=True)
class _Pending:
    statement: RotationStatement
    old_alias: str
    new_alias: str
    destroy_after: int

    def render(self) -> str:
        return pretty_stringify(
            {
                "statement": self.statement.as_json(),
                "oldAlias": self.old_alias,
                "newAlias": self.new_alias,
                "destroyAfter": self.destroy_after,
            }
        )

    @classmethod
    def parse(cls, text: str) -> _Pending:
        try:
            document = parse(text)
            assert isinstance(document, dict)
            return cls(
                RotationStatement.from_json(document["statement"]),
                str(document["oldAlias"]),
                str(document["newAlias"]),
                int(document["destroyAfter"]),
            )
        except (JsonError, RotationError, AssertionError, KeyError, TypeError, ValueError):
            raise _invalid("rotation.pending.json") from None


def _allow_list_key(keystore: KeyStore, alias: str, device_id: str) -> bytes:
    return derive_allow_list_key(keystore.hmac_material(alias), device_id)


def _reseal_allow_list(home: AmeshHome, keystore: KeyStore, pending: _Pending) -> None:
    """Re-seal under the new key; a list already sealed under it is left alone."""
    text = read_text(home.allow_list_file)
    if text is None:
        return
    statement = pending.statement
    new_key = _allow_list_key(keystore, pending.new_alias, statement.new_device_id)
    now = format_timestamp(datetime.now(UTC))
    for key in (new_key, _allow_list_key(keystore, pending.old_alias, statement.device_id)):
        try:
            result = read(text, key, now)
        except AllowListError:
            continue
        if key is not new_key:
            atomic_write(home.allow_list_file, result.allow_list.render(new_key).encode("utf-8"))
        return
    raise StoreError(
        "allow_list_tampered",
        "Allow list integrity check failed — possible tampering; it was left unchanged: "
        "restore it from a backup or re-pair your devices.",
    )


def finish_rotation(home: AmeshHome, keystore: KeyStore, identity: Identity) -> Identity:
    """Complete a rotation whose pending file exists (idempotent); return the identity."""
    if not (home.root / "rotation.pending.json").exists():
        return identity
    with exclusive_lock(home.lock_file):
        text = read_text(home.root / "rotation.pending.json")
        return identity if text is None else _finish(home, keystore, identity, text)


def _finish(home: AmeshHome, keystore: KeyStore, identity: Identity, text: str) -> Identity:
    pending = _Pending.parse(text)
    statement = pending.statement
    try:
        statement.verify()
    except RotationError:
        raise _invalid("rotation.pending.json (its statement does not verify)") from None
    if identity.public_key not in (statement.old_key, statement.new_key):
        raise _invalid("rotation.pending.json (it names another identity)")
    if keystore.signer(pending.new_alias).public_key_b64 != statement.new_key:
        raise _invalid("rotation.pending.json (its new key is not in the keystore)")
    _reseal_allow_list(home, keystore, pending)
    state = load_state(home)
    if statement not in state.chain:
        retired = RetiredKey(pending.old_alias, statement.old_key, pending.destroy_after)
        state = RotationState(
            (*state.chain, statement)[-MAX_CHAIN:],
            (*(key for key in state.retired if key.alias != retired.alias), retired),
        )
        _save_state(home, state)
    if identity.public_key != statement.new_key:
        fields = dict(identity.fields)
        fields.update(
            deviceId=statement.new_device_id,
            keyAlias=pending.new_alias,
            publicKey=statement.new_key,
        )
        identity = Identity(fields)
        save_identity(home, identity)
    remove_file(home.root / "rotation.pending.json")
    return identity


def _destroy(home: AmeshHome, keystore: KeyStore, alias: str) -> None:
    with contextlib.suppress(StoreError):
        keystore.delete(alias)  # TPM: evicts the persistent handle; a file key: forgets it
    remove_file(home.key_file(alias))
    remove_file(home.hmac_file(alias))


def prune_retired_keys(
    home: AmeshHome, keystore: KeyStore, identity: Identity, now: float | None = None
) -> tuple[RetiredKey, ...]:
    """Destroy retired keys whose grace period is over; return them."""
    if not (home.root / "rotation.json").exists():
        return ()
    moment = time.time() if now is None else now
    state = load_state(home)
    due = tuple(
        key
        for key in state.retired
        if key.destroy_after <= moment and key.alias != identity.key_alias
    )
    if not due:
        return ()
    with exclusive_lock(home.lock_file):
        for key in due:
            _destroy(home, keystore, key.alias)
        kept = tuple(key for key in load_state(home).retired if key not in due)
        _save_state(home, RotationState(state.chain, kept))
    return due


def _successor_alias() -> str:
    """A fresh alias for the successor key in a hardware backend."""
    while True:
        alias = "am_r" + secrets.token_hex(6)
        # The handle is derived from the alias (0x81 + 24 bits); only 0x81000000-0x817FFFFF
        # belong to the owner hierarchy, the upper half is refused by the TPM.
        if int(persistent_handle(alias), 16) < _OWNER_PERSISTENT_END:
            return alias


def rotate_identity(
    home: AmeshHome,
    keystore: KeyStore,
    *,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> tuple[Identity, RotationStatement]:
    """Replace the identity key; return the new identity and the statement."""
    if grace_seconds < 0:
        raise StoreError("invalid_argument", "The grace period must not be negative.")
    with exclusive_lock(home.lock_file):
        identity = finish_rotation(home, keystore, load_identity(home))
        old_signer = keystore.signer(identity.key_alias)
        if old_signer.public_key_b64 != identity.public_key:
            raise StoreError(
                "key_mismatch", "The private key does not match identity.json; restore it."
            )
        new_alias = create_key(keystore, _successor_alias())
        now = int(clock())
        statement = create_statement(
            old_signer, keystore.signer(new_alias), load_state(home).seq + 1, now
        )
        pending = _Pending(statement, identity.key_alias, new_alias, now + grace_seconds)
        atomic_write(home.root / "rotation.pending.json", pending.render().encode("utf-8"))
        identity = finish_rotation(home, keystore, identity)
    prune_retired_keys(home, keystore, identity, clock())
    return identity, statement


def _rotation_refused(error: RotationError) -> StoreError:
    return StoreError("rotation_refused", str(error))


def accept_rotation(
    store: AllowListStore, chain: Sequence[RotationStatement], now: float | None = None
) -> Device:
    """Apply a peer's rotation chain to the allow list (``amesh accept-rotation``)."""
    moment = time.time() if now is None else now
    entry: list[Device] = []

    def change(current: AllowList, stamp: str) -> AllowList:
        try:
            updated, device = apply_chain(current, chain, moment)
        except RotationError as error:
            raise _rotation_refused(error) from None
        entry.append(device)
        return updated

    store.update(change)
    return entry[0]


def set_max_key_age(store: AllowListStore, device_id: str, seconds: int | None) -> None:
    """Set (or with ``None`` remove) an entry's maximum key age."""
    store.update(lambda current, now: current.with_fields(device_id, {MAX_AGE_FIELD: seconds}, now))
