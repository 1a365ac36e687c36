"""Key rotation: an old key vouching for its successor, and the allow-list rules (no I/O).

A **rotation statement** says "device ``deviceId`` (key ``oldKey``) now uses ``newKey``;
this is its ``seq``-th rotation, made at ``ts``". Both keys sign the same
domain-separated message (:func:`signing_message`): the old key vouches for the new one,
the new key proves it is held by the same device. Statements form a chain
(``newKey`` of one is ``oldKey`` of the next, ``seq`` counting up by one).

On a peer, an allow-list entry records how far along the chain its key is
(``keySeq``, absent = 0) and when the key was made (``keyCreatedAt``, absent =
``addedAt``). :func:`apply_chain` moves an entry forward along a chain only when
the chain starts at (or passes through) the entry's exact key with the next
``seq``: a gap, a statement for a key the list does not trust (never paired,
revoked, or already rotated away) and a fork from an old key are all refused. The
entry keeps its name, role, permissions, protocol and position.

``maxKeyAge`` (seconds) on an entry makes its key refused once it is older
(:func:`key_expired`). All three are extra device fields, which the reference keeps
(and seals) on every read and rewrite.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from authmesh.core._allowlist import AllowList, Device, format_timestamp
from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._jsoncanon import JsonError, JsonValue, parse, stable_stringify
from authmesh.core._keys import InvalidKeyError, device_id, public_key_from_b64, verify
from authmesh.core._selfsig import Signer

__all__ = [
    "ACK_TYPE",
    "CHAIN_TYPE",
    "KEY_CREATED_FIELD",
    "KEY_SEQ_FIELD",
    "MAX_AGE_FIELD",
    "MAX_CHAIN",
    "ROTATION_DOMAIN",
    "RotationError",
    "RotationStatement",
    "ack_message",
    "apply_chain",
    "chain_document",
    "chain_from_document",
    "create_statement",
    "decode_chain",
    "encode_chain",
    "key_age_seconds",
    "key_created_at",
    "key_expired",
    "key_seq",
    "signing_message",
]

ROTATION_DOMAIN = "AMrot1"
"""First line of the signed message: never a valid request canonical string or pairing
transcript, so a rotation signature cannot be replayed as anything else."""
KEY_SEQ_FIELD = "keySeq"
KEY_CREATED_FIELD = "keyCreatedAt"
MAX_AGE_FIELD = "maxKeyAge"
MAX_CHAIN = 8
"""Most statements carried or accepted at once: a peer that missed more must re-pair."""
MAX_ENCODED_STATEMENT = 1024
MAX_SEQ = 2**31 - 1
FUTURE_SKEW_SECONDS = 300
"""A statement dated further ahead of the verifier's clock than this is refused."""
_TYPE = "authmesh-key-rotation"
_FIELDS = ("type", "deviceId", "oldKey", "newKey", "seq", "ts", "oldSig", "newSig")


class RotationError(ValueError):
    """A statement or chain is refused; ``reason`` is a stable code, the message a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signing_message(old_device_id: str, old_key: str, new_key: str, seq: int, ts: int) -> bytes:
    """``AMrot1 LF deviceId LF oldKey LF newKey LF seq LF ts`` in UTF-8 (both keys sign it)."""
    return "\n".join((ROTATION_DOMAIN, old_device_id, old_key, new_key, str(seq), str(ts))).encode()


def _malformed(detail: str) -> RotationError:
    return RotationError("malformed", f"The rotation statement is malformed ({detail}).")


def _int_field(document: dict[str, JsonValue], name: str, low: int, high: int) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _malformed(f"{name} is not an integer in range")
    return value


@dataclass(frozen=True)
class RotationStatement:
    """One link of a rotation chain; keys as standard base64, signatures as base64url."""

    device_id: str
    old_key: str
    new_key: str
    seq: int
    ts: int
    old_sig: str
    new_sig: str

    @property
    def new_device_id(self) -> str:
        return device_id(public_key_from_b64(self.new_key))

    @property
    def message(self) -> bytes:
        return signing_message(self.device_id, self.old_key, self.new_key, self.seq, self.ts)

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "type": _TYPE,
            "deviceId": self.device_id,
            "oldKey": self.old_key,
            "newKey": self.new_key,
            "seq": self.seq,
            "ts": self.ts,
            "oldSig": self.old_sig,
            "newSig": self.new_sig,
        }

    def encode(self) -> str:
        """Compact header form: base64url of the stable JSON."""
        return b64url_encode(stable_stringify(self.as_json()).encode("utf-8"))

    @classmethod
    def from_json(cls, document: JsonValue) -> RotationStatement:
        """Structure only; :meth:`verify` checks keys and signatures."""
        if not isinstance(document, dict) or document.get("type") != _TYPE:
            raise _malformed("not a key-rotation object")
        if set(document) != set(_FIELDS):
            raise _malformed("unexpected or missing fields")
        texts = {}
        for name in ("deviceId", "oldKey", "newKey", "oldSig", "newSig"):
            value = document[name]
            if not isinstance(value, str) or len(value) > 128:
                raise _malformed(f"{name} is not a short text")
            texts[name] = value
        return cls(
            device_id=texts["deviceId"],
            old_key=texts["oldKey"],
            new_key=texts["newKey"],
            seq=_int_field(document, "seq", 1, MAX_SEQ),
            ts=_int_field(document, "ts", 0, 10**12 - 1),
            old_sig=texts["oldSig"],
            new_sig=texts["newSig"],
        )

    @classmethod
    def decode(cls, text: str) -> RotationStatement:
        if len(text) > MAX_ENCODED_STATEMENT:
            raise _malformed("too long")
        try:
            return cls.from_json(parse(b64decode(text).decode("utf-8")))
        except (B64Error, UnicodeDecodeError, JsonError):
            raise _malformed("not base64url JSON") from None

    def verify(self) -> None:
        """Both keys valid and distinct, the device id the old key's, both signatures good."""
        try:
            old_raw = public_key_from_b64(self.old_key)
            new_raw = public_key_from_b64(self.new_key)
            signatures = (b64decode(self.old_sig), b64decode(self.new_sig))
        except (InvalidKeyError, B64Error):
            raise _malformed("a key or signature does not decode") from None
        if b64encode(old_raw) != self.old_key or b64encode(new_raw) != self.new_key:
            raise _malformed("a key is not in canonical base64")
        if old_raw == new_raw:
            raise _malformed("the new key equals the old key")
        if device_id(old_raw) != self.device_id:
            raise _malformed("deviceId is not the old key's")
        message = self.message
        if not (
            verify(old_raw, signatures[0], message) and verify(new_raw, signatures[1], message)
        ):
            raise RotationError(
                "bad_signature", "The rotation statement's signatures do not verify."
            )


def create_statement(old: Signer, new: Signer, seq: int, ts: int) -> RotationStatement:
    """Sign a statement moving ``old`` to ``new`` (both keys must be usable here)."""
    old_key, new_key = b64encode(old.public_key), b64encode(new.public_key)
    old_id = device_id(old.public_key)
    message = signing_message(old_id, old_key, new_key, seq, ts)
    statement = RotationStatement(
        old_id,
        old_key,
        new_key,
        seq,
        ts,
        b64url_encode(old.sign(message)),
        b64url_encode(new.sign(message)),
    )
    statement.verify()
    return statement


def _check_links(chain: Sequence[RotationStatement]) -> None:
    """1..MAX_CHAIN statements, each continuing the previous one (no signature checked)."""
    if not chain or len(chain) > MAX_CHAIN:
        raise _malformed(f"a chain holds 1 to {MAX_CHAIN} statements")
    for previous, statement in itertools.pairwise(chain):
        if statement.old_key != previous.new_key or statement.seq != previous.seq + 1:
            raise RotationError("gap", "The rotation chain has a gap or is out of order.")
        if statement.ts < previous.ts:
            raise RotationError("gap", "The rotation chain goes back in time.")


def encode_chain(chain: Sequence[RotationStatement]) -> str:
    """Header value: the statements' compact forms joined by commas, oldest first."""
    return ",".join(statement.encode() for statement in chain)


def decode_chain(text: str) -> tuple[RotationStatement, ...]:
    """Parse a header value (at most :data:`MAX_CHAIN` statements; not yet verified)."""
    parts = text.split(",")
    if len(parts) > MAX_CHAIN:
        raise _malformed(f"more than {MAX_CHAIN} statements")
    return tuple(RotationStatement.decode(part.strip()) for part in parts)


CHAIN_TYPE = "authmesh-rotation-chain"
ACK_TYPE = "authmesh-rotation-ack"
ACK_DOMAIN = "AMrotack1"


def chain_document(chain: Sequence[RotationStatement]) -> dict[str, JsonValue]:
    """The chain as exported to a file or sent through the relay."""
    return {"type": CHAIN_TYPE, "statements": [statement.as_json() for statement in chain]}


def chain_from_document(document: JsonValue) -> tuple[RotationStatement, ...]:
    """Parse :func:`chain_document`'s form (structure only; at most :data:`MAX_CHAIN`)."""
    if not isinstance(document, dict) or document.get("type") != CHAIN_TYPE:
        raise _malformed("not a rotation chain")
    items = document.get("statements")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CHAIN:
        raise _malformed(f"a chain holds 1 to {MAX_CHAIN} statements")
    return tuple(RotationStatement.from_json(item) for item in items)


def ack_message(new_key: str, seq: int, peer_key: str) -> bytes:
    """What a peer signs to confirm it now trusts ``new_key`` (relay delivery)."""
    return "\n".join((ACK_DOMAIN, new_key, str(seq), peer_key)).encode()


def key_seq(device: Device) -> int:
    value = device.fields.get(KEY_SEQ_FIELD, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse_timestamp(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def key_created_at(device: Device) -> datetime | None:
    """When the entry's key was made: ``keyCreatedAt``, else ``addedAt`` (None if unreadable)."""
    return _parse_timestamp(device.fields.get(KEY_CREATED_FIELD, device.fields.get("addedAt")))


def key_age_seconds(device: Device, now: float) -> int | None:
    created = key_created_at(device)
    return None if created is None else max(0, int(now - created.timestamp()))


def key_expired(device: Device, now: float) -> bool:
    """True when the entry has a ``maxKeyAge`` and its key is older (or of unknown age)."""
    limit = device.fields.get(MAX_AGE_FIELD)
    if not isinstance(limit, int) or isinstance(limit, bool):
        return False
    age = key_age_seconds(device, now)
    return age is None or age > limit


def _successor(entry: Device, statement: RotationStatement) -> Device:
    fields = dict(entry.fields)
    fields["deviceId"] = statement.new_device_id
    fields["publicKey"] = statement.new_key
    fields[KEY_SEQ_FIELD] = statement.seq
    fields[KEY_CREATED_FIELD] = format_timestamp(datetime.fromtimestamp(statement.ts, UTC))
    return Device(fields)


def _start(allow_list: AllowList, chain: Sequence[RotationStatement]) -> tuple[Device, int]:
    """The trusted entry the chain continues and the index of the first link to apply."""
    final = allow_list.find_by_public_key(chain[-1].new_key)
    if final is not None and key_seq(final) == chain[-1].seq:
        return final, len(chain)
    for index, statement in enumerate(chain):
        entry = allow_list.find_by_public_key(statement.old_key)
        if entry is None:
            continue
        if entry.device_id != statement.device_id or key_seq(entry) != statement.seq - 1:
            raise RotationError(
                "out_of_order",
                f"The rotation of {statement.device_id} does not follow the trusted key "
                f"(expected rotation {key_seq(entry) + 1}, got {statement.seq}).",
            )
        return entry, index
    raise RotationError(
        "unknown_key",
        "No key in the rotation chain is trusted here (never paired, revoked, or already "
        "rotated); pair the device again.",
    )


def apply_chain(
    allow_list: AllowList, chain: Sequence[RotationStatement], now: float
) -> tuple[AllowList, Device]:
    """Move the entry the chain continues to the chain's last key; return list and entry.

    Already at the last key: the list is returned unchanged. ``now`` (Unix seconds) is
    the verifier's clock; it also dates the new ``updatedAt``. Raises
    :class:`RotationError`.
    """
    _check_links(chain)
    if chain[-1].ts > now + FUTURE_SKEW_SECONDS:
        raise RotationError("future", "The rotation statement is dated in the future.")
    # Trust is looked up before any signature is checked, and only the links from the
    # trusted key on are verified: a chain about unknown keys costs no ECDSA at all.
    entry, first = _start(allow_list, chain)
    for statement in chain[first:]:
        statement.verify()
    if first == len(chain):
        return allow_list, entry
    if key_expired(entry, now):
        # Checked now, not at the statement's self-declared date, which a thief of an
        # expired key could backdate.
        raise RotationError("expired", "The trusted key expired before it was rotated.")
    if allow_list.find_by_public_key(chain[-1].new_key) is not None:
        raise RotationError("conflict", "The new key is already trusted for another entry.")
    successor = entry
    for statement in chain[first:]:
        successor = _successor(successor, statement)
    stamp = format_timestamp(datetime.fromtimestamp(now, UTC))
    return allow_list.replacing_device(entry.device_id, successor, stamp), successor
