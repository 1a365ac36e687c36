"""The pure core of authmesh: wire formats, crypto and protocol rules, with no I/O.

It imports nothing but ``cryptography``, so a verifier, a test or another transport can build
on it alone. Meant to be used:

* allow lists: :class:`AllowList`, :class:`Device`, the roles :data:`ROLE_CONTROLLER` and
  :data:`ROLE_TARGET`; failures are :class:`AllowListError`;
* keys: :class:`PrivateKey`, :func:`public_key_from_b64`, :func:`device_id`
  (:class:`InvalidKeyError`), and :class:`Signer`, what any keystore offers;
* signed requests: :func:`canonical_string` and :func:`body_sha256` (:class:`CanonicalError`),
  :class:`AuthHeader` and :func:`parse_header` (:class:`HeaderError`), nonce stores
  (:class:`NonceStore`, :class:`AsyncNonceStore`, :class:`InMemoryNonceStore`);
* key rotation: :class:`RotationStatement` (:class:`RotationError`);
* bootstrap tokens: :func:`mint_token`, :func:`decode_token`, :class:`BootstrapToken`
  (:class:`BootstrapTokenError`).

The remote shell's formats and session rules are :mod:`authmesh.core.shell`. The modules
named ``_*.py`` are internal: their names may change without notice.
"""

from authmesh.core._allowlist import (
    ROLE_CONTROLLER,
    ROLE_TARGET,
    AllowList,
    AllowListError,
    Device,
)
from authmesh.core._bootstrap_token import (
    BootstrapToken,
    BootstrapTokenError,
    decode_token,
    mint_token,
)
from authmesh.core._canonical import CanonicalError, body_sha256, canonical_string
from authmesh.core._header import AuthHeader, HeaderError, parse_header
from authmesh.core._keys import InvalidKeyError, PrivateKey, device_id, public_key_from_b64
from authmesh.core._nonce import AsyncNonceStore, InMemoryNonceStore, NonceStore
from authmesh.core._rotation import RotationError, RotationStatement
from authmesh.core._selfsig import Signer

__all__ = [
    "ROLE_CONTROLLER",
    "ROLE_TARGET",
    "AllowList",
    "AllowListError",
    "AsyncNonceStore",
    "AuthHeader",
    "BootstrapToken",
    "BootstrapTokenError",
    "CanonicalError",
    "Device",
    "HeaderError",
    "InMemoryNonceStore",
    "InvalidKeyError",
    "NonceStore",
    "PrivateKey",
    "RotationError",
    "RotationStatement",
    "Signer",
    "body_sha256",
    "canonical_string",
    "decode_token",
    "device_id",
    "mint_token",
    "parse_header",
    "public_key_from_b64",
]
