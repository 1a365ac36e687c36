"""``identity.json``: this device's id, public key, name and key backend (spec §1.3).

Written as ``JSON.stringify(obj, null, 2)`` in the reference's field order; unknown
fields are kept when we rewrite the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authmesh.core._jsoncanon import JsonError, JsonValue, parse, pretty_stringify
from authmesh.store._errors import StoreError
from authmesh.store._files import atomic_write, read_text
from authmesh.store._home import AmeshHome

__all__ = ["IDENTITY_VERSION", "Identity", "load_identity", "save_identity"]

IDENTITY_VERSION = "2.0.0"
_REQUIRED = ("deviceId", "publicKey", "friendlyName", "createdAt", "storageBackend")


def _invalid(reason: str) -> StoreError:
    return StoreError(
        "identity_invalid",
        f"identity.json is {reason}; restore it from a backup or run `amesh init --force`.",
    )


@dataclass(frozen=True)
class Identity:
    """A parsed ``identity.json``; ``fields`` is the whole object in file order."""

    fields: Mapping[str, JsonValue]

    @classmethod
    def new(
        cls,
        *,
        device_id: str,
        key_alias: str,
        public_key: str,
        friendly_name: str,
        created_at: str,
        storage_backend: str,
        max_controllers: int = 1,
    ) -> Identity:
        """A fresh identity in the reference's field order (``maxControllers`` only if > 1)."""
        fields: dict[str, JsonValue] = {
            "version": IDENTITY_VERSION,
            "deviceId": device_id,
            "keyAlias": key_alias,
            "publicKey": public_key,
            "friendlyName": friendly_name,
            "createdAt": created_at,
            "storageBackend": storage_backend,
        }
        if max_controllers > 1:
            fields["maxControllers"] = max_controllers
        return cls(fields)

    @classmethod
    def parse(cls, text: str) -> Identity:
        try:
            data = parse(text)
        except JsonError:
            raise _invalid("not valid JSON") from None
        if not isinstance(data, dict):
            raise _invalid("not a JSON object")
        for name in _REQUIRED:
            if not isinstance(data.get(name), str):
                raise _invalid(f"missing its {name}")
        for name in ("keyAlias", "passphrase"):
            if name in data and not isinstance(data[name], str):
                raise _invalid(f"holding a non-text {name}")
        limit = data.get("maxControllers", 1)
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 1:
            raise _invalid("holding an invalid maxControllers")
        return cls(data)

    def render(self) -> str:
        return pretty_stringify(dict(self.fields))

    @property
    def device_id(self) -> str:
        return str(self.fields["deviceId"])

    @property
    def key_alias(self) -> str:
        """The key's name in the keystore: ``keyAlias ?? deviceId``."""
        return str(self.fields.get("keyAlias", self.fields["deviceId"]))

    @property
    def public_key(self) -> str:
        """Standard padded base64 of the compressed key: the header ``id`` value."""
        return str(self.fields["publicKey"])

    @property
    def friendly_name(self) -> str:
        return str(self.fields["friendlyName"])

    @property
    def created_at(self) -> str:
        return str(self.fields["createdAt"])

    @property
    def storage_backend(self) -> str:
        return str(self.fields["storageBackend"])

    @property
    def max_controllers(self) -> int:
        value = self.fields.get("maxControllers", 1)
        assert isinstance(value, int | float)
        return int(value)

    @property
    def legacy_passphrase(self) -> str | None:
        """The pre-H2 ``passphrase`` field, migrated away on load (spec §1.5)."""
        value = self.fields.get("passphrase")
        return value if isinstance(value, str) else None

    def without_legacy_passphrase(self) -> Identity:
        return Identity({k: v for k, v in self.fields.items() if k != "passphrase"})


def load_identity(home: AmeshHome) -> Identity:
    """Read ``identity.json``; ``no_identity`` if it does not exist."""
    text = read_text(home.identity_file)
    if text is None:
        raise StoreError("no_identity", "No identity found. Run `amesh init` first.")
    return Identity.parse(text)


def save_identity(home: AmeshHome, identity: Identity) -> None:
    atomic_write(home.identity_file, identity.render().encode("utf-8"))
