"""The encrypted-file key format (``keys/<alias>.key.json``), bytes in and bytes out.

Bit-compatible with the reference's encrypted-file keystore (spec sdk-keystore.md
§8.3): the 32-byte private scalar is encrypted with AES-256-GCM (12-byte IV, tag
appended, no AAD) under ``Argon2id(UTF-8(passphrase), salt, t=3, m=64 MiB, p=1,
32 bytes)``. The file is ``JSON.stringify(obj, null, 2)`` with base64 fields.

The reference ignores the informational ``argon2Params`` field on read; we refuse a
file whose parameters differ from the constants, because decrypting it would only fail
with a misleading "wrong passphrase" message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._jsoncanon import JsonError, JsonValue, parse, pretty_stringify

__all__ = [
    "ARGON2_PARAMS",
    "DECRYPTION_FAILED_MESSAGE",
    "KeyFile",
    "KeyFileError",
    "derive_file_key",
    "encrypt_scalar",
]

ARGON2_PARAMS = {"t": 3, "m": 65536, "p": 1}
DECRYPTION_FAILED_MESSAGE = "Decryption failed — wrong passphrase or corrupted key file"

_FILE_VERSION = "2.0.0"
_SALT_LENGTH = 16
_IV_LENGTH = 12
_SCALAR_LENGTH = 32
_TAG_LENGTH = 16


class KeyFileError(ValueError):
    """A key file is malformed or cannot be decrypted; the message is user-facing."""


def derive_file_key(passphrase: str, salt: bytes) -> bytes:
    """Argon2id with the reference's constant parameters (about 0.2 s and 64 MiB)."""
    return Argon2id(
        salt=salt,
        length=32,
        iterations=ARGON2_PARAMS["t"],
        lanes=ARGON2_PARAMS["p"],
        memory_cost=ARGON2_PARAMS["m"],
    ).derive(_text_encoder_utf8(passphrase))


def _text_encoder_utf8(text: str) -> bytes:
    """UTF-8 as JavaScript's TextEncoder: surrogate pairs joined, lone surrogates -> U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        joined = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
        return joined.encode("utf-8", "replace")


@dataclass(frozen=True)
class KeyFile:
    """A parsed key file: KDF salt, GCM IV, ciphertext with tag, and the public key (b64)."""

    salt: bytes
    nonce: bytes
    ciphertext: bytes
    public_key: str

    @classmethod
    def parse(cls, text: str) -> KeyFile:
        """Read a key file's text; raises :class:`KeyFileError` if it is not one."""
        try:
            data = parse(text)
        except JsonError:
            raise KeyFileError("The key file is not valid JSON.") from None
        if not isinstance(data, dict):
            raise KeyFileError("The key file is not a JSON object.")
        if data.get("algorithm") != "aes-256-gcm" or data.get("kdf") != "argon2id":
            raise KeyFileError("The key file does not use aes-256-gcm with argon2id.")
        if data.get("argon2Params", ARGON2_PARAMS) != ARGON2_PARAMS:
            raise KeyFileError("The key file uses Argon2 parameters other than t=3, m=65536, p=1.")
        fields = {name: _b64_field(data, name) for name in ("salt", "nonce", "ciphertext")}
        public_key = data.get("publicKey")
        if len(fields["nonce"]) != _IV_LENGTH or not isinstance(public_key, str):
            raise KeyFileError("The key file has a malformed nonce or public key.")
        return cls(fields["salt"], fields["nonce"], fields["ciphertext"], public_key)

    def render(self) -> str:
        """The file text in the reference's field order and layout."""
        document: dict[str, JsonValue] = {
            "version": _FILE_VERSION,
            "algorithm": "aes-256-gcm",
            "kdf": "argon2id",
            "argon2Params": dict(ARGON2_PARAMS),
            "salt": b64encode(self.salt),
            "nonce": b64encode(self.nonce),
            "ciphertext": b64encode(self.ciphertext),
            "publicKey": self.public_key,
        }
        return pretty_stringify(document)

    def decrypt(self, passphrase: str) -> bytes:
        """The 32-byte private scalar; :data:`DECRYPTION_FAILED_MESSAGE` on any failure."""
        key = derive_file_key(passphrase, self.salt)
        try:
            scalar = AESGCM(key).decrypt(self.nonce, self.ciphertext, None)
        except InvalidTag:
            raise KeyFileError(DECRYPTION_FAILED_MESSAGE) from None
        if len(scalar) != _SCALAR_LENGTH:
            raise KeyFileError(DECRYPTION_FAILED_MESSAGE)
        return scalar


def _b64_field(data: dict[str, JsonValue], name: str) -> bytes:
    value = data.get(name)
    if not isinstance(value, str):
        raise KeyFileError(f"The key file has no {name} field.")
    try:
        return b64decode(value)
    except B64Error:
        raise KeyFileError(f"The key file's {name} field is not base64.") from None


def encrypt_scalar(
    scalar: bytes,
    passphrase: str,
    public_key_b64: str,
    *,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> KeyFile:
    """Encrypt a private scalar; ``salt``/``nonce`` default to fresh random bytes."""
    if len(scalar) != _SCALAR_LENGTH:
        raise KeyFileError("A private key scalar is 32 bytes.")
    salt = secrets.token_bytes(_SALT_LENGTH) if salt is None else salt
    nonce = secrets.token_bytes(_IV_LENGTH) if nonce is None else nonce
    ciphertext = AESGCM(derive_file_key(passphrase, salt)).encrypt(nonce, scalar, None)
    assert len(ciphertext) == _SCALAR_LENGTH + _TAG_LENGTH
    return KeyFile(salt, nonce, ciphertext, public_key_b64)
