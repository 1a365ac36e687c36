"""Shell handshake primitives: keys, identity envelope and transcript-bound selfSig (spec shell §3).

Wire formats are the reference's, byte for byte:

* ``K_tmp = HKDF-SHA256(Z, salt="amesh-shell-v1", info="temp:temp")`` and the session key
  ``K = HKDF-SHA256(Z, salt="amesh-shell-v1", info="<targetDeviceId>:<controllerDeviceId>")``,
  ``Z`` being the ECDH x-coordinate of the two ephemeral keys (§3.2);
* the identity envelope ``nonce(12) || ChaCha20-Poly1305(K_tmp, JSON identity)`` with the
  fields ``publicKey, deviceId, friendlyName, timestamp, selfSig`` in that order (§3.3);
* ``selfSig`` over ``UTF-8("amesh-shell-v1\\n" publicKey "\\n" deviceId "\\n" friendlyName
  "\\n" timestamp "\\n") || SHA-256(signerEph || verifierEph)`` (audit C1, §3.4).

:func:`selfsig_valid` is the reference's check alone. :func:`verify_identity` is ours and
also refuses what the reference lets through, invisibly to conforming peers:

* identity fields with control characters, which could shift the newline-joined field
  boundaries of the signed bytes (weakness S6), or of unreasonable length;
* a ``deviceId`` that is not derived from ``publicKey`` (weakness S2: the claimed id feeds the
  session key and the logs);
* a timestamp not in the exact ``YYYY-MM-DDTHH:MM:SS.sssZ`` form every reference peer sends
  (the reference accepts anything JavaScript's date parser does);
* uncompressed ephemeral keys (the reference's curve library accepts them; its peers never
  send them).

:func:`authorize_peer` applies the allow-list rules of §3.5 to the verified peer.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from authmesh.core._allowlist import ROLE_CONTROLLER, ROLE_TARGET, Device, format_timestamp
from authmesh.core._b64 import B64Error, b64decode, b64encode
from authmesh.core._jsoncanon import JsonError, legacy_stringify, parse
from authmesh.core._keys import InvalidKeyError, PrivateKey, device_id, verify
from authmesh.core._selfsig import Signer
from authmesh.core._tunnel import TunnelError, hkdf_sha256, open_blob, seal_blob
from authmesh.core.shell._cipher import Role

__all__ = [
    "MAX_ENVELOPE_LENGTH",
    "MAX_FRIENDLY_NAME_LENGTH",
    "SELFSIG_DOMAIN",
    "SHELL_HKDF_SALT",
    "TEMP_KEY_INFO",
    "TIMESTAMP_SKEW",
    "HandshakeErrorCode",
    "ShellHandshakeError",
    "ShellIdentity",
    "VerifiedPeer",
    "authorize_peer",
    "create_identity",
    "derive_session_key",
    "derive_temp_key",
    "open_identity",
    "parse_timestamp",
    "seal_identity",
    "selfsig_message",
    "selfsig_valid",
    "session_key_info",
    "shared_secret",
    "shell_hkdf",
    "transcript_hash",
    "verify_identity",
]

SHELL_HKDF_SALT = b"amesh-shell-v1"
TEMP_KEY_INFO = "temp:temp"
SELFSIG_DOMAIN = "amesh-shell-v1"
# Inclusive bound between the peer's signing clock and ours (the reference's 60 000 ms).
TIMESTAMP_SKEW = timedelta(seconds=60)
MAX_FRIENDLY_NAME_LENGTH = 256
# Decoded envelope bound: five short fields fit in well under 1 KiB.
MAX_ENVELOPE_LENGTH = 4096

_IDENTITY_FIELDS = ("publicKey", "deviceId", "friendlyName", "timestamp", "selfSig")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
# C0 controls, DEL and C1 controls: none belongs in an identity field (S6, S8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SIGNATURE_LENGTH = 64
_COMPRESSED_KEY_LENGTH = 33
# Device ids are 19 characters and timestamps 24; this only bounds hostile input.
_MAX_SHORT_FIELD = 64


class HandshakeErrorCode(Enum):
    """Why a handshake step failed. Values are stable codes for logs and tests."""

    INVALID_EPHEMERAL = "invalid_ephemeral"
    ENVELOPE_UNREADABLE = "envelope_unreadable"
    ENVELOPE_MALFORMED = "envelope_malformed"
    FIELD_INVALID = "field_invalid"
    DEVICE_ID_MISMATCH = "device_id_mismatch"
    SELFSIG_INVALID = "selfsig_invalid"
    TIMESTAMP_INVALID = "timestamp_invalid"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    NOT_IN_ALLOW_LIST = "not_in_allow_list"
    NOT_A_CONTROLLER = "not_a_controller"
    NOT_A_TARGET = "not_a_target"
    SHELL_NOT_GRANTED = "shell_not_granted"
    AT_CAPACITY = "at_capacity"
    OUT_OF_ORDER = "out_of_order"


class ShellHandshakeError(ValueError):
    """A handshake step failed; the message is one sentence naming the problem and the fix."""

    def __init__(self, code: HandshakeErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ShellIdentity:
    """The identity envelope's plaintext; every field is the exact string on the wire."""

    public_key: str
    device_id: str
    friendly_name: str
    timestamp: str
    self_sig: str

    def to_json(self) -> str:
        """Compact JSON in the reference's key order, as ``JSON.stringify`` writes it."""
        return legacy_stringify(
            {
                "publicKey": self.public_key,
                "deviceId": self.device_id,
                "friendlyName": self.friendly_name,
                "timestamp": self.timestamp,
                "selfSig": self.self_sig,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ShellIdentity:
        """Parse an envelope plaintext: an object with the five string fields (others ignored)."""
        try:
            document = parse(text)
        except JsonError:
            document = None
        if not isinstance(document, dict) or not all(
            isinstance(document.get(name), str) for name in _IDENTITY_FIELDS
        ):
            raise ShellHandshakeError(
                HandshakeErrorCode.ENVELOPE_MALFORMED,
                "The peer's identity is not a JSON object with text fields publicKey, deviceId, "
                "friendlyName, timestamp and selfSig; the peer is not a compatible amesh client.",
            )
        return cls(*(str(document[name]) for name in _IDENTITY_FIELDS))


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """A peer identity that passed :func:`verify_identity`."""

    public_key: bytes
    public_key_b64: str
    device_id: str
    friendly_name: str
    signed_at: datetime


def shell_hkdf(ikm: bytes, info: str) -> bytes:
    """HKDF-SHA256 with the shell salt ``amesh-shell-v1`` and UTF-8 ``info``, 32 bytes."""
    return hkdf_sha256(ikm, salt=SHELL_HKDF_SALT, info=info.encode("utf-8"))


def shared_secret(own_ephemeral: PrivateKey, peer_ephemeral: bytes) -> bytes:
    """ECDH x-coordinate with the peer's ephemeral (33-byte compressed point required)."""
    try:
        return own_ephemeral.exchange(peer_ephemeral)
    except InvalidKeyError as exc:
        raise ShellHandshakeError(
            HandshakeErrorCode.INVALID_EPHEMERAL,
            "The peer's ephemeral key is not a compressed P-256 point; the peer or relay "
            "is not speaking the amesh shell protocol.",
        ) from exc


def derive_temp_key(secret: bytes) -> bytes:
    """``K_tmp``, which protects only the two identity envelopes."""
    return shell_hkdf(secret, TEMP_KEY_INFO)


def session_key_info(target_device_id: str, controller_device_id: str) -> str:
    """``"<targetDeviceId>:<controllerDeviceId>"`` — target first on both sides."""
    return f"{target_device_id}:{controller_device_id}"


def derive_session_key(secret: bytes, *, target_device_id: str, controller_device_id: str) -> bytes:
    """The :class:`~authmesh.core.shell.ShellCipher` key ``K``."""
    return shell_hkdf(secret, session_key_info(target_device_id, controller_device_id))


def transcript_hash(signer_ephemeral: bytes, verifier_ephemeral: bytes) -> bytes:
    """``SHA-256(signerEph || verifierEph)`` over the key bytes as sent and received."""
    return hashlib.sha256(signer_ephemeral + verifier_ephemeral).digest()


def selfsig_message(
    public_key_b64: str,
    device_id: str,
    friendly_name: str,
    timestamp: str,
    *,
    signer_ephemeral: bytes,
    verifier_ephemeral: bytes,
) -> bytes:
    """The exact bytes a shell ``selfSig`` covers."""
    header = "\n".join((SELFSIG_DOMAIN, public_key_b64, device_id, friendly_name, timestamp))
    return (header + "\n").encode("utf-8") + transcript_hash(signer_ephemeral, verifier_ephemeral)


def create_identity(
    signer: Signer,
    friendly_name: str,
    moment: datetime,
    *,
    own_ephemeral: bytes,
    peer_ephemeral: bytes,
) -> ShellIdentity:
    """Our identity for this handshake, signed over the two ephemerals (ours first)."""
    if not _field_ok(friendly_name, MAX_FRIENDLY_NAME_LENGTH):
        raise ValueError(
            f"This device's friendly name must be 1 to {MAX_FRIENDLY_NAME_LENGTH} characters "
            "without control characters; rename the device."
        )
    public_key_b64 = b64encode(signer.public_key)
    own_device_id = device_id(signer.public_key)
    timestamp = format_timestamp(moment)
    message = selfsig_message(
        public_key_b64,
        own_device_id,
        friendly_name,
        timestamp,
        signer_ephemeral=own_ephemeral,
        verifier_ephemeral=peer_ephemeral,
    )
    signature = b64encode(signer.sign(message))
    return ShellIdentity(public_key_b64, own_device_id, friendly_name, timestamp, signature)


def selfsig_valid(
    identity: ShellIdentity, *, signer_ephemeral: bytes, verifier_ephemeral: bytes
) -> bool:
    """The reference's selfSig check alone: low-S signature by ``publicKey``; never raises."""
    try:
        public_key = b64decode(identity.public_key)
        signature = b64decode(identity.self_sig)
    except B64Error:
        return False
    message = selfsig_message(
        identity.public_key,
        identity.device_id,
        identity.friendly_name,
        identity.timestamp,
        signer_ephemeral=signer_ephemeral,
        verifier_ephemeral=verifier_ephemeral,
    )
    return verify(public_key, signature, message)


def parse_timestamp(text: str) -> datetime:
    """Read a ``YYYY-MM-DDTHH:MM:SS.sssZ`` timestamp (the only form reference peers send)."""
    if _TIMESTAMP.fullmatch(text) is not None:
        with contextlib.suppress(ValueError):  # e.g. month 13: right shape, no such time
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    raise ShellHandshakeError(
        HandshakeErrorCode.TIMESTAMP_INVALID,
        "The peer's identity timestamp is not an ISO-8601 UTC time like "
        "2026-04-05T12:00:00.000Z; the peer is not a compatible amesh client.",
    )


def verify_identity(
    identity: ShellIdentity, *, peer_ephemeral: bytes, own_ephemeral: bytes, now: datetime
) -> VerifiedPeer:
    """Check a received identity against this handshake's transcript and our clock ``now``.

    ``peer_ephemeral`` is the key bytes as received, ``own_ephemeral`` ours as sent. Checks,
    in order: field syntax (S6), deviceId bound to publicKey (S2), selfSig over the
    transcript, timestamp form and skew of at most 60 s either way.
    """
    for value, label, limit in (
        (identity.device_id, "device id", _MAX_SHORT_FIELD),
        (identity.timestamp, "timestamp", _MAX_SHORT_FIELD),
        (identity.friendly_name, "friendly name", MAX_FRIENDLY_NAME_LENGTH),
    ):
        if not _field_ok(value, limit):
            raise ShellHandshakeError(
                HandshakeErrorCode.FIELD_INVALID,
                f"The peer's {label} is empty, longer than {limit} characters or contains "
                "control characters; refusing the identity.",
            )
    public_key = _canonical_public_key(identity.public_key)
    try:
        signature = b64decode(identity.self_sig)
    except B64Error:
        raise _selfsig_error() from None
    if identity.device_id != device_id(public_key):
        raise ShellHandshakeError(
            HandshakeErrorCode.DEVICE_ID_MISMATCH,
            "The peer's device id does not belong to its public key; refusing an identity "
            "that claims another device.",
        )
    message = selfsig_message(
        identity.public_key,
        identity.device_id,
        identity.friendly_name,
        identity.timestamp,
        signer_ephemeral=peer_ephemeral,
        verifier_ephemeral=own_ephemeral,
    )
    if len(signature) != _SIGNATURE_LENGTH or not verify(public_key, signature, message):
        raise _selfsig_error()
    signed_at = parse_timestamp(identity.timestamp)
    if abs(now - signed_at) > TIMESTAMP_SKEW:
        raise ShellHandshakeError(
            HandshakeErrorCode.TIMESTAMP_OUT_OF_RANGE,
            "The peer's clock differs from ours by more than 60 seconds; synchronise both "
            "clocks (NTP) and retry.",
        )
    return VerifiedPeer(
        public_key, identity.public_key, identity.device_id, identity.friendly_name, signed_at
    )


def seal_identity(temp_key: bytes, identity: ShellIdentity, *, nonce: bytes | None = None) -> bytes:
    """The envelope ``nonce || ciphertext || tag``; the nonce is random unless given (tests)."""
    return seal_blob(temp_key, identity.to_json().encode("utf-8"), nonce=nonce)


def open_identity(temp_key: bytes, envelope: bytes) -> ShellIdentity:
    """Decrypt and parse a peer's envelope (not yet verified: see :func:`verify_identity`)."""
    if len(envelope) > MAX_ENVELOPE_LENGTH:
        raise ShellHandshakeError(
            HandshakeErrorCode.ENVELOPE_MALFORMED,
            f"The peer's identity envelope exceeds {MAX_ENVELOPE_LENGTH} bytes; refusing it.",
        )
    try:
        plaintext = open_blob(temp_key, envelope)
    except TunnelError as exc:
        raise ShellHandshakeError(
            HandshakeErrorCode.ENVELOPE_UNREADABLE,
            "The peer's identity envelope does not decrypt under the handshake key; the relay "
            "or the peer altered it.",
        ) from exc
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    return ShellIdentity.from_json(text)


def authorize_peer(local_role: Role, entry: Device | None) -> None:
    """Apply the allow-list rules to a verified peer (spec §3.5).

    ``entry`` is the allow-list entry whose ``publicKey`` equals the verified key (``None``
    if there is none). A target accepts only controllers granted the shell permission;
    a controller accepts only targets.
    """
    if entry is None:
        raise ShellHandshakeError(
            HandshakeErrorCode.NOT_IN_ALLOW_LIST,
            "The peer device is not in this device's allow list; pair the two devices first.",
        )
    if local_role is Role.TARGET:
        if entry.role != ROLE_CONTROLLER:
            raise ShellHandshakeError(
                HandshakeErrorCode.NOT_A_CONTROLLER,
                "The peer device is paired with this device as a target, not a controller, "
                "so it cannot open a shell here.",
            )
        if not entry.shell_allowed:
            raise ShellHandshakeError(
                HandshakeErrorCode.SHELL_NOT_GRANTED,
                "The peer device has no shell access; grant it on this device with "
                "amesh grant <device-id> --shell.",
            )
    elif entry.role != ROLE_TARGET:
        raise ShellHandshakeError(
            HandshakeErrorCode.NOT_A_TARGET,
            "The peer device is paired with this device as a controller, not a target, so it "
            "cannot serve a shell to this device.",
        )


def _selfsig_error() -> ShellHandshakeError:
    return ShellHandshakeError(
        HandshakeErrorCode.SELFSIG_INVALID,
        "The peer's identity signature does not match this handshake; the connection may "
        "have been intercepted, so it was refused.",
    )


def _field_ok(value: str, limit: int) -> bool:
    return bool(value) and len(value) <= limit and _CONTROL.search(value) is None


def _canonical_public_key(text: str) -> bytes:
    """The 33-byte key, only from its canonical standard-base64 text (the allow-list form)."""
    try:
        public_key = b64decode(text)
    except B64Error:
        public_key = b""
    if len(public_key) != _COMPRESSED_KEY_LENGTH or b64encode(public_key) != text:
        raise ShellHandshakeError(
            HandshakeErrorCode.FIELD_INVALID,
            "The peer's public key is not a standard-base64 compressed P-256 key; refusing "
            "the identity.",
        )
    return public_key
