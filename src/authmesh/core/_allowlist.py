"""The HMAC-sealed allow list: its model, seal and exact file bytes (no I/O).

File format, key derivation and read algorithm follow the reference (spec
sdk-keystore.md §7) so either implementation reads and re-seals the other's file:

* ``allow_list_key = HKDF-SHA256(material, salt="amesh-allow-list-integrity-v1",
  info=deviceId)``; the seal is ``b64(HMAC-SHA256(key, stableStringify({version,
  devices, updatedAt})))``, checked in constant time. A file sealed with the pre-L5
  legacy canonical (plain ``JSON.stringify``) is accepted on read and must be re-sealed.
* Files are rendered as ``JSON.stringify(data, null, 2)`` keeping the parsed file's key
  order and every unknown field (unknown device fields are covered by the seal;
  unknown top-level fields are not, and are never interpreted).

Hardening over the reference (spec §10 W17): every parse or format problem (invalid
JSON, missing or non-base64 ``hmac``, wrong field types) is an
:class:`IntegrityError`, never a generic crash; and only ``role == "controller"``
may authenticate (:attr:`Device.may_authenticate`), where the reference accepts any
role except ``"target"``.

Each device may carry an optional integer ``protocol`` field (absent means 1): peers
paired with pairing v2 are recorded with ``"protocol": 2`` so the SDK refuses v1
signatures from them. The reference keeps unknown device fields on every read and
re-seal and covers them with the seal, so files we write stay readable by it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._jsoncanon import (
    JsonError,
    JsonValue,
    legacy_stringify,
    parse,
    pretty_stringify,
    stable_stringify,
)

__all__ = [
    "ALLOW_LIST_VERSION",
    "INTEGRITY_FAILURE_MESSAGE",
    "PROTOCOL_V1",
    "PROTOCOL_V2",
    "ROLE_CONTROLLER",
    "ROLE_TARGET",
    "AllowList",
    "AllowListError",
    "Device",
    "DeviceExistsError",
    "DeviceNotFoundError",
    "IntegrityError",
    "ReadResult",
    "derive_allow_list_key",
    "format_timestamp",
    "read",
    "software_hmac_material",
]

ALLOW_LIST_VERSION = "2.0.0"
ROLE_CONTROLLER = "controller"
ROLE_TARGET = "target"
PROTOCOL_V1 = 1
PROTOCOL_V2 = 2
INTEGRITY_FAILURE_MESSAGE = (
    "CRITICAL: allow_list integrity check failed — possible tampering. "
    "The HMAC seal does not match. Refusing to process."
)

_INTEGRITY_SALT = b"amesh-allow-list-integrity-v1"
_MATERIAL_SALT = b"amesh-hmac-material-v1"
_SEALED_FIELDS = ("version", "devices", "updatedAt")
_STRING_FIELDS = ("deviceId", "publicKey", "friendlyName", "addedAt", "addedBy", "role")
_KNOWN_PROTOCOLS = (PROTOCOL_V1, PROTOCOL_V2)


class AllowListError(ValueError):
    """An allow-list operation failed; the message is one user-facing sentence."""


class IntegrityError(AllowListError):
    """The file's seal does not verify, or the file is not a well-formed allow list.

    ``seal_mismatch`` tells the two apart; ``reason`` is a short phrase for messages.
    """

    def __init__(self, message: str, reason: str, *, seal_mismatch: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.seal_mismatch = seal_mismatch


def _seal_mismatch() -> IntegrityError:
    return IntegrityError(
        INTEGRITY_FAILURE_MESSAGE, "the HMAC seal does not match", seal_mismatch=True
    )


class DeviceExistsError(AllowListError):
    """The device id is already in the allow list."""


class DeviceNotFoundError(AllowListError):
    """The device id is not in the allow list."""


def _hkdf(ikm: bytes, salt: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info.encode()).derive(ikm)


def derive_allow_list_key(material: bytes, device_id: str) -> bytes:
    """HMAC key sealing this device's allow list (info = the identity's deviceId)."""
    return _hkdf(material, _INTEGRITY_SALT, device_id)


def software_hmac_material(scalar: bytes, key_alias: str) -> bytes:
    """Encrypted-file backend material: HKDF of the private scalar (info = the key alias)."""
    return _hkdf(scalar, _MATERIAL_SALT, key_alias)


def format_timestamp(moment: datetime) -> str:
    """JavaScript ``Date.toISOString()``: ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _mac(key: bytes, canonical: str) -> bytes:
    # JSON text may hold lone surrogates only as \u escapes, so UTF-8 always works.
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).digest()


def _sealed_part(top: Mapping[str, Any]) -> dict[str, JsonValue]:
    # The reference builds {version, devices, updatedAt}; absent members are omitted.
    return {name: top[name] for name in _SEALED_FIELDS if name in top}


@dataclass(frozen=True)
class Device:
    """One allow-list entry. ``fields`` is the whole entry in file order, unknown keys kept."""

    fields: Mapping[str, JsonValue]

    @classmethod
    def new(
        cls,
        *,
        device_id: str,
        public_key: str,
        friendly_name: str,
        role: str,
        added_at: str,
        added_by: str = "handshake",
        protocol: int = PROTOCOL_V1,
        shell: bool | None = None,
    ) -> Device:
        """An entry in the reference's field order; ``protocol`` is written only when not 1."""
        if protocol not in _KNOWN_PROTOCOLS:
            raise AllowListError(f"Protocol {protocol} is not supported; use 1 or 2.")
        fields: dict[str, JsonValue] = {
            "deviceId": device_id,
            "publicKey": public_key,
            "friendlyName": friendly_name,
            "addedAt": added_at,
            "addedBy": added_by,
            "role": role,
        }
        if shell is not None:
            fields["permissions"] = {"shell": shell}
        if protocol != PROTOCOL_V1:
            fields["protocol"] = protocol
        return cls(fields)

    @property
    def device_id(self) -> str:
        return str(self.fields["deviceId"])

    @property
    def public_key(self) -> str:
        """Standard padded base64 of the compressed key: the exact lookup string."""
        return str(self.fields["publicKey"])

    @property
    def friendly_name(self) -> str:
        return str(self.fields["friendlyName"])

    @property
    def added_at(self) -> str:
        return str(self.fields["addedAt"])

    @property
    def added_by(self) -> str:
        return str(self.fields["addedBy"])

    @property
    def role(self) -> str:
        return str(self.fields["role"])

    @property
    def may_authenticate(self) -> bool:
        """Only controllers may sign requests to us (stricter than the reference, W17)."""
        return self.role == ROLE_CONTROLLER

    @property
    def permissions(self) -> Mapping[str, JsonValue]:
        value = self.fields.get("permissions")
        return value if isinstance(value, dict) else {}

    @property
    def shell_allowed(self) -> bool:
        return self.permissions.get("shell") is True

    @property
    def protocol(self) -> int:
        """The pairing/signature protocol the peer was recorded with (absent: 1)."""
        value = self.fields.get("protocol", PROTOCOL_V1)
        assert isinstance(value, int)
        return value

    def with_permissions(self, permissions: Mapping[str, JsonValue]) -> Device:
        """Shallow-merge ``permissions`` into the entry (the reference's updatePermissions)."""
        fields = dict(self.fields)
        fields["permissions"] = {**self.permissions, **permissions}
        return Device(fields)


@dataclass(frozen=True)
class AllowList:
    """A verified allow list. Operations return new lists with ``updatedAt`` set to ``now``.

    ``top`` holds the parsed top-level object (file key order, unknown fields kept);
    its ``devices`` and ``hmac`` members are superseded by :attr:`devices` and the seal.
    """

    devices: tuple[Device, ...]
    updated_at: str
    top: Mapping[str, JsonValue]

    @classmethod
    def empty(cls, now: str) -> AllowList:
        """What the reference writes when no file exists."""
        top: dict[str, JsonValue] = {
            "version": ALLOW_LIST_VERSION,
            "devices": [],
            "updatedAt": now,
            "hmac": "",
        }
        return cls((), now, top)

    def _document(self) -> dict[str, JsonValue]:
        document = dict(self.top)
        document["devices"] = [dict(device.fields) for device in self.devices]
        document["updatedAt"] = self.updated_at
        return document

    def seal(self, key: bytes) -> str:
        """Base64 HMAC over the stable canonical form."""
        return b64encode(_mac(key, stable_stringify(_sealed_part(self._document()))))

    def render(self, key: bytes) -> str:
        """The sealed file text, byte-identical to what the reference writes."""
        document = self._document()
        document["hmac"] = self.seal(key)
        return pretty_stringify(document)

    def find(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    def find_by_public_key(self, public_key: str) -> Device | None:
        """First entry whose ``publicKey`` string equals ``public_key`` exactly."""
        return next((d for d in self.devices if d.public_key == public_key), None)

    def count_by_role(self, role: str) -> int:
        return sum(1 for device in self.devices if device.role == role)

    def _replace(self, devices: tuple[Device, ...], now: str) -> AllowList:
        return AllowList(devices, now, self.top)

    def with_device(self, device: Device, now: str) -> AllowList:
        """Append ``device``; its id must not be present yet."""
        if self.find(device.device_id) is not None:
            raise DeviceExistsError(f"Device {device.device_id} already in allow list.")
        return self._replace((*self.devices, device), now)

    def without_device(self, device_id: str, now: str) -> AllowList:
        """Remove every entry with ``device_id``."""
        kept = tuple(d for d in self.devices if d.device_id != device_id)
        if len(kept) == len(self.devices):
            raise DeviceNotFoundError(f"Device {device_id} not found in allow list.")
        return self._replace(kept, now)

    def replacing_role(self, role: str, device: Device, now: str) -> AllowList:
        """Drop every entry with ``role`` or ``device``'s id, then append ``device``."""
        kept = tuple(d for d in self.devices if d.role != role and d.device_id != device.device_id)
        return self._replace((*kept, device), now)

    def replacing_device(self, device_id: str, device: Device, now: str) -> AllowList:
        """Put ``device`` where the first entry with ``device_id`` is; drop the others."""
        if self.find(device_id) is None:
            raise DeviceNotFoundError(f"Device {device_id} not found in allow list.")
        kept: list[Device] = []
        for current in self.devices:
            if current.device_id != device_id:
                kept.append(current)
            elif device not in kept:
                kept.append(device)
        return self._replace(tuple(kept), now)

    def with_fields(self, device_id: str, fields: Mapping[str, JsonValue], now: str) -> AllowList:
        """Set (or, for a ``None`` value, remove) top-level fields of the entry ``device_id``."""
        current = self.find(device_id)
        if current is None:
            raise DeviceNotFoundError(f"Device {device_id} not found in allow list.")
        merged = {**current.fields, **fields}
        changed = Device({k: v for k, v in merged.items() if v is not None})
        return self.replacing_device(device_id, changed, now)

    def with_permissions(
        self, device_id: str, permissions: Mapping[str, JsonValue], now: str
    ) -> AllowList:
        """Shallow-merge ``permissions`` into every entry with ``device_id``."""
        if self.find(device_id) is None:
            raise DeviceNotFoundError(f"Device {device_id} not found in allow list.")
        devices = tuple(
            d.with_permissions(permissions) if d.device_id == device_id else d for d in self.devices
        )
        return self._replace(devices, now)


@dataclass(frozen=True)
class ReadResult:
    """A verified list; ``needs_reseal``: write it back (legacy seal or migrated role)."""

    allow_list: AllowList
    needs_reseal: bool


def _verify_seal(top: Mapping[str, Any], key: bytes) -> bool:
    """True when the stable seal matches; False when only the legacy one does."""
    stored = top.get("hmac")
    if not isinstance(stored, str):
        raise _malformed("no HMAC seal")
    try:
        expected = b64decode(stored)
    except B64Error:
        raise _seal_mismatch() from None
    sealed = _sealed_part(top)
    try:
        if hmac.compare_digest(_mac(key, stable_stringify(sealed)), expected):
            return True
    except JsonError:
        raise _malformed("nested too deeply") from None
    if hmac.compare_digest(_mac(key, legacy_stringify(sealed)), expected):
        return False
    raise _seal_mismatch()


def _malformed(reason: str) -> IntegrityError:
    return IntegrityError(
        f"The allow list is malformed ({reason}); restore it from a backup.",
        reason,
        seal_mismatch=False,
    )


def _check_device(entry: object) -> dict[str, JsonValue]:
    if not isinstance(entry, dict):
        raise _malformed("a device entry is not an object")
    for name in _STRING_FIELDS:
        if not isinstance(entry.get(name), str):
            raise _malformed(f"a device entry has no text field {name!r}")
    if "permissions" in entry and not isinstance(entry["permissions"], dict):
        raise _malformed("a device entry has non-object permissions")
    protocol = entry.get("protocol", PROTOCOL_V1)
    if isinstance(protocol, bool) or protocol not in _KNOWN_PROTOCOLS:
        raise _malformed("a device entry has an unknown protocol")
    # Key-rotation fields (authmesh.core._rotation): counters and limits must be integers.
    for name in ("keySeq", "maxKeyAge"):
        value = entry.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _malformed(f"a device entry has an invalid {name}")
    if not isinstance(entry.get("keyCreatedAt", ""), str):
        raise _malformed("a device entry has a non-text keyCreatedAt")
    return entry


def read(text: str, key: bytes, now: str) -> ReadResult:
    """Parse and verify a file's text (reference ``AllowList.read`` minus the I/O).

    Tries the stable seal, then the legacy one. Devices with a missing or empty
    ``role`` become controllers. With a legacy seal or a migrated role the result has
    ``updatedAt = now`` and ``needs_reseal``; the caller decides whether to write.
    Raises :class:`IntegrityError` on any seal or format failure.
    """
    try:
        top = parse(text)
    except JsonError:
        raise _malformed("not valid JSON") from None
    if not isinstance(top, dict):
        raise _malformed("not a JSON object")
    stable = _verify_seal(top, key)
    raw_devices = top.get("devices")
    if not isinstance(raw_devices, list):
        raise _malformed("no device list")
    if not isinstance(top.get("version"), str) or not isinstance(top.get("updatedAt"), str):
        raise _malformed("no version or updatedAt")
    migrated = False
    for entry in raw_devices:
        if isinstance(entry, dict) and not entry.get("role"):
            entry["role"] = ROLE_CONTROLLER
            migrated = True
    devices = tuple(Device(_check_device(entry)) for entry in raw_devices)
    needs_reseal = migrated or not stable
    updated_at = now if needs_reseal else str(top["updatedAt"])
    return ReadResult(AllowList(devices, updated_at, top), needs_reseal)
