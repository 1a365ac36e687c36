"""Keystores behind one interface, backend detection and the reference's labels (spec §8).

* ``encrypted-file``: ``keys/<alias>.key.json`` (core.keyfile). The key is decrypted
  once per keystore object and kept in memory (the reference re-runs Argon2id on every
  signature, W8).
* ``tpm2``: tpm2-tools (store.tpm); signatures normalised to low S (W3).
* ``keychain``/``secure-enclave``: macOS only. Elsewhere they cannot sign, but their
  allow list can still be verified and re-sealed because its HMAC material is the
  ``keys/<alias>.hmac`` file, as for every hardware backend.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from authmesh.core import InvalidKeyError, PrivateKey, public_key_from_b64
from authmesh.core import Signer as CoreSigner
from authmesh.core._allowlist import software_hmac_material
from authmesh.core._keyfile import KeyFile, KeyFileError, encrypt_scalar
from authmesh.store._errors import StoreError
from authmesh.store._files import atomic_write, exclusive_lock, read_text, remove_file
from authmesh.store._home import AmeshHome

__all__ = [
    "BACKENDS",
    "BACKEND_LABELS",
    "ENCRYPTED_FILE",
    "KEYCHAIN",
    "SECURE_ENCLAVE",
    "TPM2",
    "EncryptedFileKeyStore",
    "KeyStore",
    "Signer",
    "UnavailableKeyStore",
    "backend_label",
    "create_key",
    "detect_backend",
    "progress_line",
    "read_or_create_hmac_file",
]

SECURE_ENCLAVE = "secure-enclave"
KEYCHAIN = "keychain"
TPM2 = "tpm2"
ENCRYPTED_FILE = "encrypted-file"
BACKENDS = (SECURE_ENCLAVE, KEYCHAIN, TPM2, ENCRYPTED_FILE)
BACKEND_LABELS = {
    SECURE_ENCLAVE: "Secure Enclave",
    KEYCHAIN: "macOS Keychain",
    TPM2: "TPM 2.0",
    ENCRYPTED_FILE: "Encrypted file",
}
_HMAC_SECRET_LENGTH = 32


def backend_label(backend: str) -> str:
    """Human label (``TPM 2.0`` …); an unknown backend name is shown as is."""
    return BACKEND_LABELS.get(backend, backend)


@runtime_checkable
class Signer(CoreSigner, Protocol):
    """An unlocked identity key with its encodings (``core.keys.PrivateKey`` is one)."""

    @property
    def public_key_b64(self) -> str: ...

    @property
    def device_id(self) -> str: ...


class KeyStore(Protocol):
    """The reference ``KeyStore`` interface plus :meth:`signer` (unlock once, sign many)."""

    backend_name: str

    def generate_and_store(self, alias: str) -> bytes:
        """Create a key under ``alias``; returns its 33-byte compressed public key."""
        ...

    def signer(self, alias: str) -> Signer: ...

    def public_key(self, alias: str) -> bytes: ...

    def hmac_material(self, alias: str) -> bytes:
        """The 32 bytes the allow-list key is derived from (spec §7.3)."""
        ...

    def delete(self, alias: str) -> None: ...


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(
            "io_error", f"Could not read {path} ({exc.strerror}); check its permissions."
        ) from exc


def read_or_create_hmac_file(home: AmeshHome, alias: str) -> bytes:
    """Hardware backends' HMAC material: ``keys/<alias>.hmac``, created (0600) if missing."""
    path = home.hmac_file(alias)
    material = _read_bytes(path)
    if material is None:
        # Under the lock so two first-time loaders cannot write different secrets.
        with exclusive_lock(home.lock_file):
            material = _read_bytes(path)
            if material is None:
                material = secrets.token_bytes(_HMAC_SECRET_LENGTH)
                atomic_write(path, material)
    if not material:
        raise StoreError("key_invalid", f"{path} is empty; restore it from a backup.")
    return material


class EncryptedFileKeyStore:
    """Software keys encrypted with the passphrase; decrypted at most once per alias."""

    backend_name = ENCRYPTED_FILE

    def __init__(self, home: AmeshHome, passphrase: str) -> None:
        if not passphrase:
            raise StoreError(
                "no_passphrase",
                "The encrypted-file backend needs a passphrase: set AUTH_MESH_PASSPHRASE "
                "or re-run `amesh init` to generate one.",
            )
        self._home = home
        self._passphrase = passphrase
        self._unlocked: dict[str, PrivateKey] = {}

    def store(self, alias: str, key: PrivateKey) -> None:
        """Encrypt ``key`` into ``keys/<alias>.key.json`` (0600)."""
        key_file = encrypt_scalar(key.scalar(), self._passphrase, key.public_key_b64)
        atomic_write(self._home.key_file(alias), key_file.render().encode("utf-8"))
        self._unlocked[alias] = key

    def generate_and_store(self, alias: str) -> bytes:
        key = PrivateKey.generate()
        self.store(alias, key)
        return key.public_key

    def _key_file(self, alias: str) -> KeyFile:
        path = self._home.key_file(alias)
        text = read_text(path)
        if text is None:
            raise StoreError(
                "key_missing", f"The key file {path} is missing; run `amesh init --force`."
            )
        try:
            return KeyFile.parse(text)
        except KeyFileError as exc:
            problem = str(exc).rstrip(".")
            raise StoreError(
                "key_invalid",
                f"{problem} ({path}); restore it from a backup or run `amesh init --force`.",
            ) from None

    def signer(self, alias: str) -> PrivateKey:
        """The decrypted key (one Argon2id run per alias and process)."""
        if alias not in self._unlocked:
            key_file = self._key_file(alias)
            try:
                scalar = key_file.decrypt(self._passphrase)
            except KeyFileError:
                raise StoreError(
                    "wrong_passphrase",
                    "Could not decrypt the private key: the passphrase is wrong or the key "
                    "file is corrupted; check AUTH_MESH_PASSPHRASE or the passphrase file.",
                ) from None
            key = PrivateKey.from_scalar(scalar)
            if key.public_key_b64 != key_file.public_key:
                raise StoreError(
                    "key_mismatch",
                    f"The key file for {alias} does not match its public key; "
                    "restore it from a backup.",
                )
            self._unlocked[alias] = key
        return self._unlocked[alias]

    def public_key(self, alias: str) -> bytes:
        """Read from the key file without decrypting."""
        try:
            return public_key_from_b64(self._key_file(alias).public_key)
        except InvalidKeyError as exc:
            raise StoreError(
                "key_invalid", f"The key file for {alias} is corrupted: {exc}."
            ) from None

    def hmac_material(self, alias: str) -> bytes:
        return software_hmac_material(self.signer(alias).scalar(), alias)

    def delete(self, alias: str) -> None:
        self._unlocked.pop(alias, None)
        remove_file(self._home.key_file(alias))


class UnavailableKeyStore:
    """A backend this platform cannot drive (macOS Keychain/Secure Enclave off macOS).

    Signing and key generation fail with one clear sentence; the allow list still
    works through the ``.hmac`` file.
    """

    def __init__(self, home: AmeshHome, backend_name: str) -> None:
        self._home = home
        self.backend_name = backend_name

    def _unavailable(self) -> StoreError:
        return StoreError(
            "backend_unavailable",
            f"The {backend_label(self.backend_name)} backend is not available on this platform "
            f"({sys.platform}); run `amesh init --force` with tpm2 or encrypted-file.",
        )

    def generate_and_store(self, alias: str) -> bytes:
        raise self._unavailable()

    def signer(self, alias: str) -> Signer:
        raise self._unavailable()

    def public_key(self, alias: str) -> bytes:
        raise self._unavailable()

    def hmac_material(self, alias: str) -> bytes:
        return read_or_create_hmac_file(self._home, alias)

    def delete(self, alias: str) -> None:
        raise self._unavailable()


def create_key(keystore: KeyStore, hardware_alias: str) -> str:
    """A new P-256 key in ``keystore``; returns its alias. An encrypted-file key is named by
    its device id; a hardware backend's by ``hardware_alias``."""
    if isinstance(keystore, EncryptedFileKeyStore):
        key = PrivateKey.generate()
        keystore.store(key.device_id, key)
        return key.device_id
    keystore.generate_and_store(hardware_alias)
    return hardware_alias


def progress_line(name: str, status: str) -> str:
    """One ``Detecting key storage backend:`` line as the reference prints it."""
    return f"  {name:<18}{status}"


def detect_backend(
    tpm_missing: Callable[[], str | None], progress: Callable[[str], None] | None = None
) -> str:
    """The reference's order: macOS helper, then TPM 2.0 on Linux, then the encrypted file.

    ``tpm_missing()`` is None when the TPM works, else what is missing (shown in the line).
    We ship no macOS helper, so on macOS both Apple backends report "helper not found".
    """
    report = progress or (lambda line: None)
    if sys.platform == "darwin":
        report(progress_line("Secure Enclave", "not available (helper not found)"))
        report(progress_line("macOS Keychain", "not available (helper not found)"))
    elif sys.platform.startswith("linux"):
        missing = tpm_missing()
        if missing is None:
            report(progress_line("TPM 2.0", "selected"))
            return TPM2
        report(progress_line("TPM 2.0", f"not available ({missing})"))
    report(progress_line("Encrypted file", "selected (software fallback)"))
    return ENCRYPTED_FILE
