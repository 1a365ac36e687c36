"""Passphrase for the encrypted-file keystore: where it comes from and where it is kept.

One resolution order everywhere (the reference's CLI rule; its SDK differs, W7):
``$AUTH_MESH_PASSPHRASE`` verbatim if non-empty, else the passphrase file
(``$AMESH_PASSPHRASE_FILE`` or ``<home>/.passphrase``) trimmed like JavaScript's
``trim()``, else a legacy ``passphrase`` field in ``identity.json``, which is moved to
the passphrase file (mode 0400) and removed from ``identity.json``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from authmesh.store._errors import StoreError
from authmesh.store._files import atomic_write, read_text
from authmesh.store._home import AmeshHome
from authmesh.store._identity import Identity, save_identity

__all__ = [
    "ENV_PASSPHRASE",
    "MIGRATION_NOTICE",
    "ResolvedPassphrase",
    "generate_passphrase",
    "js_trim",
    "resolve_passphrase",
    "save_passphrase",
]

ENV_PASSPHRASE = "AUTH_MESH_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
MIGRATION_NOTICE = (
    "[amesh] migrated legacy passphrase from identity.json to dedicated file. "
    "The identity.json file should be re-saved to clear the deprecated field."
)
_PASSPHRASE_MODE = 0o400
# ECMAScript WhiteSpace and LineTerminator code points (what String.prototype.trim strips).
_JS_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def js_trim(text: str) -> str:
    """JavaScript ``String.prototype.trim`` (Python's ``strip`` differs on a few code points)."""
    return text.strip(_JS_WHITESPACE)


def generate_passphrase() -> str:
    """32 CSPRNG bytes as 64 lowercase hex characters, like the reference."""
    return secrets.token_hex(32)


def save_passphrase(home: AmeshHome, passphrase: str) -> None:
    """Write the passphrase file atomically: UTF-8, no trailing newline, mode 0400."""
    atomic_write(home.passphrase_file, passphrase.encode("utf-8"), _PASSPHRASE_MODE)


@dataclass(frozen=True)
class ResolvedPassphrase:
    """The passphrase, where it came from (``env``/``file``/``legacy``) and the identity
    as it is now (rewritten without the legacy field after a migration)."""

    value: str
    source: str
    identity: Identity


def resolve_passphrase(
    home: AmeshHome, identity: Identity, environ: Mapping[str, str]
) -> ResolvedPassphrase | None:
    """Find the passphrase, migrating a legacy one; ``None`` if there is none anywhere."""
    from_env = environ.get(ENV_PASSPHRASE)
    if from_env:
        return ResolvedPassphrase(from_env, "env", identity)
    try:
        from_file = read_text(home.passphrase_file)
    except StoreError as exc:
        raise StoreError(
            "passphrase_unreadable",
            f"Could not read the passphrase file {home.passphrase_file}; "
            f"fix its permissions or set {ENV_PASSPHRASE}.",
        ) from exc
    if from_file is not None:
        return ResolvedPassphrase(js_trim(from_file), "file", identity)
    legacy = identity.legacy_passphrase
    if legacy is None:
        return None
    save_passphrase(home, legacy)
    migrated = identity.without_legacy_passphrase()
    save_identity(home, migrated)
    return ResolvedPassphrase(legacy, "legacy", migrated)
