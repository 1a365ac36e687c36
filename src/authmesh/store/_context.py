"""What the CLI and the SDK call: create an identity, load it with its unlocked key.

``create_identity`` is ``amesh init`` (spec §9.1) without the printing;
``load_context`` is the reference's context loading (identity, passphrase, keystore,
HMAC material, allow list), done once per process. Every failure is a
:class:`StoreError` whose message is the sentence to show.

Deliberate differences from the reference (spec §10):

* W13: a passphrase taken from ``AUTH_MESH_PASSPHRASE`` is not written to the
  passphrase file, auto-detection honours that variable too, and ``--force`` removes the
  old identity's key file, ``.hmac`` file and TPM handle before creating the new key.
* W7: the same passphrase order (env, file, legacy field) for every caller.
* W20: a wrong passphrase or broken key file is reported as such, not as "No identity".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from authmesh.core._allowlist import derive_allow_list_key
from authmesh.store._allowlist_store import AllowListStore, now_timestamp
from authmesh.store._errors import StoreError
from authmesh.store._files import exclusive_lock, remove_file
from authmesh.store._home import AmeshHome
from authmesh.store._identity import Identity, load_identity, save_identity
from authmesh.store._keystore import (
    BACKENDS,
    ENCRYPTED_FILE,
    KEYCHAIN,
    SECURE_ENCLAVE,
    TPM2,
    EncryptedFileKeyStore,
    KeyStore,
    Signer,
    UnavailableKeyStore,
    backend_label,
    create_key,
    detect_backend,
)
from authmesh.store._passphrase import (
    ENV_PASSPHRASE,
    MIGRATION_NOTICE,
    generate_passphrase,
    resolve_passphrase,
    save_passphrase,
)
from authmesh.store._rotation import finish_rotation, prune_retired_keys
from authmesh.store._tpm import TpmKeyStore, TpmTools

__all__ = [
    "KEYSTORE_BACKENDS",
    "Context",
    "InitResult",
    "KeystoreBackend",
    "create_identity",
    "is_software_backend",
    "load_context",
    "open_keystore",
]

_HARDWARE_INIT_ALIAS = "am_init"


@dataclass(frozen=True)
class KeystoreBackend:
    """One entry of the keystore registry: how to open the backend and what it needs.

    ``uses_passphrase``: the key is encrypted with the home's passphrase (software-only);
    otherwise the key lives in hardware and the allow list is sealed with the ``.hmac`` file.
    A new backend is one :class:`KeyStore` class and one entry in :data:`KEYSTORE_BACKENDS`.
    """

    name: str
    open: Callable[[AmeshHome, str | None, Mapping[str, str]], KeyStore]
    uses_passphrase: bool = False


KEYSTORE_BACKENDS: dict[str, KeystoreBackend] = {
    backend.name: backend
    for backend in (
        KeystoreBackend(
            ENCRYPTED_FILE,
            lambda home, passphrase, env: EncryptedFileKeyStore(home, passphrase or ""),
            uses_passphrase=True,
        ),
        KeystoreBackend(TPM2, lambda home, passphrase, env: TpmKeyStore(home, TpmTools(env))),
        KeystoreBackend(
            KEYCHAIN, lambda home, passphrase, env: UnavailableKeyStore(home, KEYCHAIN)
        ),
        KeystoreBackend(
            SECURE_ENCLAVE, lambda home, passphrase, env: UnavailableKeyStore(home, SECURE_ENCLAVE)
        ),
    )
}


def _registered(backend: str) -> KeystoreBackend:
    entry = KEYSTORE_BACKENDS.get(backend)
    if entry is None:
        raise StoreError(
            "backend_unsupported",
            f"Unsupported storage backend: {backend}; use one of {', '.join(BACKENDS)}.",
        )
    return entry


def is_software_backend(backend: str) -> bool:
    """Whether keys of ``backend`` are only software-protected (not bound to hardware)."""
    entry = KEYSTORE_BACKENDS.get(backend)
    return entry is not None and entry.uses_passphrase


@dataclass(frozen=True)
class InitResult:
    """What ``amesh init`` reports: the identity, backend label and where the passphrase went.

    ``passphrase_file`` is set when a generated passphrase was saved (encrypted-file
    backend); ``None`` when the passphrase came from the environment or no passphrase
    is used.
    """

    identity: Identity
    backend_label: str
    passphrase_file: Path | None


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def open_keystore(
    backend: str, home: AmeshHome, passphrase: str | None, environ: Mapping[str, str]
) -> KeyStore:
    """The reference's ``createForBackend``: a keystore for a registered backend name."""
    return _registered(backend).open(home, passphrase, environ)


def _previous_identity(home: AmeshHome) -> Identity | None:
    try:
        return load_identity(home)
    except StoreError:
        return None


def _release_hardware_key(home: AmeshHome, old: Identity, environ: Mapping[str, str]) -> None:
    """``--force``: free the old hardware key (a TPM handle the new key may reuse) and its
    ``.hmac`` file; a backend this platform cannot drive has nothing to free here."""
    with contextlib.suppress(StoreError):
        remove_file(home.hmac_file(old.key_alias))
    backend = KEYSTORE_BACKENDS.get(old.storage_backend)
    if backend is not None and not backend.uses_passphrase:
        with contextlib.suppress(StoreError):
            backend.open(home, None, environ).delete(old.key_alias)


def _new_key(keystore: KeyStore) -> tuple[str, Signer]:
    """A new identity key in ``keystore``: its alias and signer."""
    alias = create_key(keystore, _HARDWARE_INIT_ALIAS)
    signer = keystore.signer(alias)
    keystore.hmac_material(alias)  # hardware backends: create keys/<alias>.hmac now
    return alias, signer


def create_identity(
    name: str,
    *,
    backend: str | None = None,
    force: bool = False,
    max_controllers: int = 1,
    home: AmeshHome | None = None,
    environ: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> InitResult:
    """Create this device's identity (``amesh init``).

    ``backend=None`` auto-detects (``progress`` receives the reference's detection
    lines). Raises ``identity_exists`` unless ``force``; ``invalid_argument`` for an
    empty name or ``max_controllers < 1``.
    """
    env = _env(environ)
    home = home or AmeshHome.from_env(env)
    if not name.strip():
        raise StoreError("invalid_argument", "The device name must not be empty; pass --name.")
    if max_controllers < 1:
        raise StoreError("invalid_argument", "--max-controllers must be at least 1.")
    with exclusive_lock(home.lock_file):
        if home.identity_file.exists() and not force:
            raise StoreError(
                "identity_exists", "Identity already exists. Use --force to overwrite."
            )
        chosen = backend or detect_backend(TpmTools(env).missing, progress)
        env_passphrase = env.get(ENV_PASSPHRASE) or None
        passphrase = None
        if _registered(chosen).uses_passphrase:
            passphrase = env_passphrase or generate_passphrase()
        keystore = open_keystore(chosen, home, passphrase, env)
        previous = _previous_identity(home) if force else None
        if previous is not None:
            _release_hardware_key(home, previous, env)

        alias, signer = _new_key(keystore)
        identity = Identity.new(
            device_id=signer.device_id,
            key_alias=alias,
            public_key=signer.public_key_b64,
            friendly_name=name,
            created_at=now_timestamp(),
            storage_backend=chosen,
            max_controllers=max_controllers,
        )
        # Passphrase before identity: a crash in between never leaves an identity
        # whose key cannot be unlocked.
        remove_file(home.passphrase_file)
        saved_to = None
        if passphrase is not None and passphrase != env_passphrase:
            save_passphrase(home, passphrase)
            saved_to = home.passphrase_file
        save_identity(home, identity)
        remove_file(home.allow_list_file)
        if previous is not None and previous.key_alias != alias:
            with contextlib.suppress(StoreError):
                remove_file(home.key_file(previous.key_alias))  # W13: no stale keys
    return InitResult(identity, backend_label(chosen), saved_to)


class Context:
    """A loaded identity: its keystore, allow list and (lazily unlocked, once) signer.

    ``notices`` holds lines the reference prints to stderr while loading (the legacy
    passphrase migration notice).
    """

    def __init__(
        self,
        home: AmeshHome,
        identity: Identity,
        keystore: KeyStore,
        allow_list: AllowListStore,
        notices: tuple[str, ...],
    ) -> None:
        self.home = home
        self.identity = identity
        self.keystore = keystore
        self.allow_list = allow_list
        self.notices = notices

    @property
    def backend_label(self) -> str:
        return backend_label(self.identity.storage_backend)

    @property
    def signer(self) -> Signer:
        """The identity key, unlocked once (``backend_unavailable`` if it cannot sign here)."""
        return self.keystore.signer(self.identity.key_alias)


def load_context(
    home: AmeshHome | None = None, environ: Mapping[str, str] | None = None
) -> Context:
    """Load identity, passphrase, keystore and allow-list key (one Argon2id for encrypted-file)."""
    env = _env(environ)
    home = home or AmeshHome.from_env(env)
    identity = load_identity(home)
    notices: tuple[str, ...] = ()
    passphrase = None
    if is_software_backend(identity.storage_backend):
        resolved = resolve_passphrase(home, identity, env)
        if resolved is not None:
            passphrase = resolved.value
            identity = resolved.identity
            if resolved.source == "legacy":
                notices = (MIGRATION_NOTICE,)
    keystore = open_keystore(identity.storage_backend, home, passphrase, env)
    identity = finish_rotation(home, keystore, identity)  # an interrupted `amesh rotate`
    prune_retired_keys(home, keystore, identity)
    material = keystore.hmac_material(identity.key_alias)
    if isinstance(keystore, EncryptedFileKeyStore):
        signer = keystore.signer(identity.key_alias)
        if signer.public_key_b64 != identity.public_key:
            raise StoreError(
                "key_mismatch",
                "The private key does not match identity.json; restore the keys directory "
                "or run `amesh init --force`.",
            )
    key = derive_allow_list_key(material, identity.device_id)
    store = AllowListStore(home, key, rekey=_rotated_key(home, keystore, identity.public_key))
    return Context(home, identity, keystore, store, notices)


def _rotated_key(
    home: AmeshHome, keystore: KeyStore, public_key: str
) -> Callable[[], bytes | None]:
    """The allow-list key of the home's identity once ``amesh rotate`` replaced ``public_key``
    (a long-running verifier keeps working); None while the identity is unchanged."""

    def rekey() -> bytes | None:
        nonlocal public_key
        identity = load_identity(home)
        if identity.public_key == public_key:
            return None
        identity = finish_rotation(home, keystore, identity)
        public_key = identity.public_key
        material = keystore.hmac_material(identity.key_alias)
        return derive_allow_list_key(material, identity.device_id)

    return rekey
