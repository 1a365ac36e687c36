"""``allow_list.json`` on disk: verified reads, locked read-modify-write, cached snapshots.

Every change takes the home's advisory lock, re-reads and verifies the file, applies
the change and writes it atomically, so concurrent writers (two CLIs, a CLI and a
server) never lose an update (W16). A file whose seal does not verify is refused with
a ``allow_list_tampered`` :class:`StoreError` and is never re-sealed.

Two read paths:

* :meth:`AllowListStore.read` — the reference's ``AllowList.read``: creates a missing
  file and writes back a legacy seal or migrated roles (used by the CLI).
* :meth:`AllowListStore.snapshot` — for request verification: never writes (a
  missing file is an empty list), and re-verifies only when the file's identity
  (inode, size, mtime) changes instead of on every request (W9).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from authmesh.core import (
    ROLE_CONTROLLER,
    ROLE_TARGET,
    AllowList,
    AllowListError,
    Device,
    InvalidKeyError,
    device_id,
    public_key_from_b64,
)
from authmesh.core._allowlist import (
    DeviceExistsError,
    DeviceNotFoundError,
    IntegrityError,
    format_timestamp,
    read,
)
from authmesh.core._b64 import b64encode
from authmesh.core._jsoncanon import JsonValue
from authmesh.store._errors import StoreError
from authmesh.store._files import atomic_write, exclusive_lock, read_text
from authmesh.store._home import AmeshHome

__all__ = ["AllowListStore", "now_timestamp"]

_FileStamp = tuple[int, int, int, int]


def now_timestamp() -> str:
    """The current time as JavaScript's ``toISOString()`` writes it."""
    return format_timestamp(datetime.now(UTC))


def _check_new_entry(device: Device) -> None:
    """Entries we write must be usable: a valid key in canonical form, its id, a known role."""
    try:
        public_key = public_key_from_b64(device.public_key)
    except InvalidKeyError:
        raise StoreError(
            "invalid_argument",
            f"The public key of {device.device_id} is not a valid P-256 key; pair again.",
        ) from None
    if b64encode(public_key) != device.public_key or device_id(public_key) != device.device_id:
        raise StoreError(
            "invalid_argument",
            f"The entry {device.device_id} does not match its public key; pair again.",
        )
    if device.role not in (ROLE_CONTROLLER, ROLE_TARGET):
        raise StoreError("invalid_argument", f"Role {device.role!r} is not controller or target.")


def _store_error(error: AllowListError) -> StoreError:
    if isinstance(error, IntegrityError):
        problem = (
            f"Allow list integrity check failed — possible tampering ({error.reason})"
            if error.seal_mismatch
            else f"Allow list is malformed ({error.reason})"
        )
        return StoreError(
            "allow_list_tampered",
            f"{problem}; it was left unchanged: restore it from a backup or re-pair your devices.",
        )
    if isinstance(error, DeviceExistsError):
        return StoreError("device_exists", str(error))
    if isinstance(error, DeviceNotFoundError):
        return StoreError("device_not_found", str(error))
    return StoreError("invalid_argument", str(error))


class AllowListStore:
    """The allow list of one home, sealed with ``key`` (derived from the identity)."""

    def __init__(
        self,
        home: AmeshHome,
        key: bytes,
        clock: Callable[[], str] = now_timestamp,
        rekey: Callable[[], bytes | None] | None = None,
    ) -> None:
        """``rekey()``: the new sealing key once the identity's key was rotated, else None."""
        self._home = home
        self._key = key
        self._rekey = rekey
        self._clock = clock
        self._cache: tuple[_FileStamp, AllowList] | None = None
        self._cache_lock = threading.Lock()

    def _parse(self, text: str, now: str) -> tuple[AllowList, bool]:
        try:
            result = read(text, self._key, now)
        except IntegrityError as exc:
            # `amesh rotate` re-seals the file for the new key while we may still run.
            new_key = self._rekey() if exc.seal_mismatch and self._rekey else None
            if new_key is None or new_key == self._key:
                raise _store_error(exc) from None
            self._key = new_key
            return self._parse(text, now)
        except AllowListError as exc:
            raise _store_error(exc) from None
        return result.allow_list, result.needs_reseal

    def _write(self, allow_list: AllowList) -> None:
        atomic_write(self._home.allow_list_file, allow_list.render(self._key).encode("utf-8"))

    def _load_locked(self, now: str) -> tuple[AllowList, bool]:
        """Current list and whether the file must be (re)written; caller holds the lock."""
        text = read_text(self._home.allow_list_file)
        if text is None:
            return AllowList.empty(now), True
        return self._parse(text, now)

    def read(self) -> AllowList:
        """Verified list, creating or re-sealing the file as the reference does."""
        with exclusive_lock(self._home.lock_file):
            allow_list, needs_write = self._load_locked(self._clock())
            if needs_write:
                self._write(allow_list)
        return allow_list

    def snapshot(self) -> AllowList:
        """Verified list without writing anything; cached until the file changes."""
        path = self._home.allow_list_file
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return AllowList.empty(self._clock())
        except OSError as exc:
            raise StoreError(
                "io_error", f"Could not read {path} ({exc.strerror}); check its permissions."
            ) from exc
        stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        text = read_text(path)
        if text is None:
            return AllowList.empty(self._clock())
        allow_list, _ = self._parse(text, self._clock())
        with self._cache_lock:
            self._cache = (stamp, allow_list)
        return allow_list

    def update(self, change: Callable[[AllowList, str], AllowList]) -> AllowList:
        """Apply ``change(current, now)`` under the lock and write the result."""
        with exclusive_lock(self._home.lock_file):
            now = self._clock()
            current, _ = self._load_locked(now)
            try:
                changed = change(current, now)
            except AllowListError as exc:
                raise _store_error(exc) from None
            self._write(changed)
        return changed

    def find_by_public_key(self, public_key: str) -> Device | None:
        """The entry for a header ``id`` (exact string match), from the cached snapshot."""
        return self.snapshot().find_by_public_key(public_key)

    def add(self, device: Device) -> AllowList:
        """Add a new entry; ``device_exists`` if its id is already there."""
        _check_new_entry(device)
        return self.update(lambda current, now: current.with_device(device, now))

    def upsert(self, device: Device) -> AllowList:
        """Add ``device`` or replace the entries with its id (re-pairing the same peer)."""
        _check_new_entry(device)

        def change(current: AllowList, now: str) -> AllowList:
            if current.find(device.device_id) is not None:
                current = current.without_device(device.device_id, now)
            return current.with_device(device, now)

        return self.update(change)

    def remove(self, device_id: str) -> AllowList:
        """Remove every entry with ``device_id``; ``device_not_found`` if there is none."""
        return self.update(lambda current, now: current.without_device(device_id, now))

    def replace_controllers(self, device: Device) -> AllowList:
        """Drop every controller and add ``device`` (the ``maxControllers`` replace flow)."""
        _check_new_entry(device)
        return self.update(
            lambda current, now: current.replacing_role(ROLE_CONTROLLER, device, now)
        )

    def set_permissions(self, device_id: str, permissions: Mapping[str, JsonValue]) -> AllowList:
        """Shallow-merge ``permissions`` (e.g. ``{"shell": True}``) into the entry."""
        return self.update(
            lambda current, now: current.with_permissions(device_id, permissions, now)
        )
