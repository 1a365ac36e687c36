"""The CLI's view of this device: :mod:`authmesh.store` calls with CLI-shaped errors.

Store failures arrive as :class:`~authmesh.store.StoreError` whose message is already
the sentence to show; this module turns them into :class:`~authmesh.cli._output.CliError`
(keeping the code, which decides the exit status) and uses the reference's exact wording where
the reference has one (a tampered allow list, in every command — the reference's ``revoke``
crashes on it instead, W20). Nothing here
re-implements the store: it only adapts results for printing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from authmesh.cli._output import CliError
from authmesh.core import Device
from authmesh.store import (
    BACKENDS,
    AmeshHome,
    Context,
    Signer,
    StoreError,
    backend_label,
    load_context,
    now_timestamp,
)
from authmesh.store import create_identity as store_create_identity
from authmesh.store._files import exclusive_lock, remove_file

__all__ = [
    "BACKENDS",
    "TAMPERED_MESSAGE",
    "CreatedIdentity",
    "DeviceView",
    "backend_label",
    "by_id_or_unique_name",
    "create_identity",
    "discard_identity",
    "identity_exists",
    "open_context",
    "store_errors",
]

_Entry = TypeVar("_Entry")

# The reference's `amesh list` wording for an allow list that fails its integrity check; we
# use it for every such failure, a malformed file included (sdk-keystore.md W17).
TAMPERED_MESSAGE = (
    "CRITICAL: Allow list integrity check failed — possible tampering.\n"
    "The file may have been modified outside of amesh."
)


def by_id_or_unique_name(
    entries: Sequence[_Entry],
    name_or_id: str,
    id_of: Callable[[_Entry], object],
    name_of: Callable[[_Entry], object],
    kind: str = "devices",
) -> _Entry | None:
    """The entry with this device id, else the only one with this friendly name (None: no
    such entry); a name several entries share is refused, as the SDK and ``shell`` do."""
    for entry in entries:
        if id_of(entry) == name_or_id:
            return entry
    named = [entry for entry in entries if name_of(entry) == name_or_id]
    if len(named) > 1:
        raise CliError(
            f'{len(named)} paired {kind} are named "{name_or_id}"; use the device id instead '
            "(see amesh list).",
            "usage",
        )
    return named[0] if named else None


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn a store failure into a one-sentence CLI error with the same code."""
    try:
        yield
    except StoreError as exc:
        message = TAMPERED_MESSAGE if exc.code == "allow_list_tampered" else str(exc)
        raise CliError(message, exc.code) from None


def identity_exists() -> bool:
    """Whether this home already holds an identity; checked before anything is printed, as
    the reference's ``init`` refuses without ``--force`` before its first output line."""
    with store_errors():
        return AmeshHome.from_env().identity_file.exists()


@dataclass(frozen=True)
class CreatedIdentity:
    """``identity.json`` as written, and where a generated passphrase was saved (if any)."""

    identity: dict[str, Any]
    passphrase_file: str | None


def create_identity(
    *,
    name: str,
    backend: str | None,
    force: bool,
    max_controllers: int,
    progress: Callable[[str], None],
) -> CreatedIdentity:
    with store_errors():
        result = store_create_identity(
            name,
            backend=backend,
            force=force,
            max_controllers=max_controllers,
            progress=progress,
        )
    saved = str(result.passphrase_file) if result.passphrase_file is not None else None
    return CreatedIdentity(dict(result.identity.fields), saved)


class DeviceView:
    """A loaded identity and its allow list, with the operations the commands need."""

    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.context.identity.fields)

    def devices(self) -> list[dict[str, Any]]:
        """Allow-list entries in file order (reading may create or re-seal the file)."""
        with store_errors():
            allow_list = self.context.allow_list.read()
        return [dict(device.fields) for device in allow_list.devices]

    def find_device(self, device_id: str) -> dict[str, Any]:
        for device in self.devices():
            if device.get("deviceId") == device_id:
                return device
        raise CliError(f"Device {device_id} not found in allow list.", "device_not_found")

    def find_device_or_name(self, name_or_id: str) -> dict[str, Any]:
        """The entry with this device id, else the only one with this friendly name."""
        device = by_id_or_unique_name(
            self.devices(),
            name_or_id,
            lambda entry: entry.get("deviceId"),
            lambda entry: entry.get("friendlyName"),
        )
        if device is None:
            raise CliError(f"Device {name_or_id} not found in allow list.", "device_not_found")
        return device

    def remove_device(self, device_id: str) -> None:
        with store_errors():
            self.context.allow_list.remove(device_id)

    def signer(self) -> Signer:
        """This device's key, unlocked once for the whole command."""
        with store_errors():
            return self.context.signer

    def record_peer(
        self,
        *,
        device_id: str,
        public_key: str,
        name: str,
        role: str,
        protocol: int,
        replace_controllers: bool = False,
    ) -> None:
        """Write a paired peer: add or update its entry, or replace every controller."""
        device = Device.new(
            device_id=device_id,
            public_key=public_key,
            friendly_name=name,
            role=role,
            added_at=now_timestamp(),
            protocol=protocol,
        )
        with store_errors():
            if replace_controllers:
                self.context.allow_list.replace_controllers(device)
            else:
                self.context.allow_list.upsert(device)

    def device_summary(self) -> dict[str, Any]:
        """This device's public fields, as ``--json`` outputs show them."""
        identity = self.identity
        return {
            name: identity[name]
            for name in ("deviceId", "publicKey", "friendlyName", "createdAt", "storageBackend")
            if name in identity
        }


def open_context() -> DeviceView:
    """Load identity, passphrase, key and allow-list key once for this command."""
    with store_errors():
        context = load_context()
    for notice in context.notices:
        sys.stderr.write(notice + "\n")
        sys.stderr.flush()
    return DeviceView(context)


def discard_identity(view: DeviceView) -> None:
    """Remove the identity just created by a failed ``bootstrap`` (key, identity, passphrase)."""
    context = view.context
    home = context.home
    with store_errors(), exclusive_lock(home.lock_file):
        context.keystore.delete(context.identity.key_alias)
        for path in (home.identity_file, home.passphrase_file, home.allow_list_file):
            remove_file(path)
