"""Client→relay messages as typed objects, read from a parsed frame at the boundary.

Each message type's ``decode`` takes the frame parsed as a JSON object (and the frame's size
in bytes, which ``data`` counts against its session's budget) and returns one of:

- the typed message, every field checked and converted (the relay's handlers see only these);
- a :class:`Refusal`, the error code the client gets at once (``invalid_otc``...);
- ``None``: the reference drops the frame without an answer.

Some malformed fields are answered only after checks the reference makes first (a rate
limit, whether the socket watches the token...); the message then carries that answer
(``BootstrapInit.refusal``, ``BootstrapAck.malformed``...) for its handler to give in turn,
so every malformed input keeps the error frame the reference gives it. Which message types
exist and who handles them is declared in ``protocol.py`` (``MESSAGE_TYPES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from authmesh.core._b64 import B64Error, b64decode

__all__ = [
    "ABSENT",
    "Agent",
    "AgentChallengeResponse",
    "AgentSession",
    "BootstrapAck",
    "BootstrapAnswer",
    "BootstrapInit",
    "BootstrapReject",
    "BootstrapWatch",
    "Connect",
    "Data",
    "Done",
    "Listen",
    "Message",
    "PairingMessage",
    "Ping",
    "Refusal",
    "Shell",
]

_OTC = re.compile(r"[0-9]{6}")
_MAX_JTI_UNITS = 128
_MAX_SIG_CHARS = 256
_MAX_KEY_CHARS = 256
_MAX_ERROR_CHARS = 64
_MAX_FRAME_CHARS = 65_536  # the message size limit already bounds these
_PROTOCOLS = (1.0, 2.0)

# A field that was not in the frame (``data`` forwards an absent payload as absent).
ABSENT: Any = object()


class Message(Protocol):
    """What every message class has: its wire ``TYPE`` and its ``decode``."""

    TYPE: ClassVar[str]

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Self | Refusal | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """The frame is answered with the error ``code`` and nothing else happens."""

    code: str


def _truthy(value: Any) -> bool:
    """JavaScript truthiness of a parsed JSON value."""
    return value not in (None, False, "", 0.0)


def _optional_text(value: Any, limit: int) -> bool:
    """Absent (None) or a string of at most ``limit`` characters."""
    return value is None or (isinstance(value, str) and len(value) <= limit)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _jti(value: Any) -> str | None:
    """A token id a socket can watch, or None."""
    if isinstance(value, str) and _utf16_units(value) <= _MAX_JTI_UNITS:
        return value
    return None


def _device_fields(
    fields: dict[str, Any], id_name: str, key_name: str
) -> tuple[str, str] | Refusal:
    """The (device id, public key) strings of ``agent``/``shell``, or the reference's error."""
    device, public_key = fields.get(id_name), fields.get(key_name)
    if not _truthy(device) or not _truthy(public_key):
        return Refusal("missing_fields")
    if not isinstance(device, str) or not isinstance(public_key, str):
        return Refusal("invalid_message")
    return device, public_key


# ---------------------------------------------------------------------- pairing


@dataclass(frozen=True, slots=True)
class PairingMessage:
    """``listen`` or ``connect``: a pairing code and the contract's ``protocol`` (1 or 2)."""

    otc: str
    protocol: int

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Self | Refusal:
        otc = fields.get("otc")
        # W11: only a string of exactly six ASCII digits is a code.
        if not isinstance(otc, str) or not _OTC.fullmatch(otc):
            return Refusal("invalid_otc")
        protocol = fields.get("protocol", 1.0)  # absent means 1
        if type(protocol) is not float or protocol not in _PROTOCOLS:
            return Refusal("invalid_message")
        return cls(otc, int(protocol))


@dataclass(frozen=True, slots=True)
class Listen(PairingMessage):
    """The target opens a pairing code."""

    TYPE: ClassVar[str] = "listen"


@dataclass(frozen=True, slots=True)
class Connect(PairingMessage):
    """The controller joins the code a target opened."""

    TYPE: ClassVar[str] = "connect"


@dataclass(slots=True)
class Data:
    """A frame for the session's peer: ``payload`` (any JSON value, or :data:`ABSENT`) and
    the frame's ``size`` in bytes. Not frozen, unlike the others: it is made for every
    forwarded frame, and a frozen dataclass takes twice as long to make."""

    TYPE: ClassVar[str] = "data"
    payload: Any
    size: int

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Data:
        return cls(fields.get("payload", ABSENT), size)


@dataclass(frozen=True, slots=True)
class Done:
    """The session is over."""

    TYPE: ClassVar[str] = "done"

    @staticmethod
    def decode(fields: dict[str, Any], size: int) -> Done:
        return _DONE


@dataclass(frozen=True, slots=True)
class Ping:
    """Keepalive (an agent's heartbeat)."""

    TYPE: ClassVar[str] = "ping"

    @staticmethod
    def decode(fields: dict[str, Any], size: int) -> Ping:
        return _PING


_DONE = Done()
_PING = Ping()


# ---------------------------------------------------------------------- bootstrap


@dataclass(frozen=True, slots=True)
class BootstrapWatch:
    """A controller waits for the target that will present token ``jti``."""

    TYPE: ClassVar[str] = "bootstrap_watch"
    jti: str

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> BootstrapWatch | Refusal:
        value = fields.get("jti")
        if not _truthy(value):
            return Refusal("missing_jti")
        jti = _jti(value)
        return Refusal("invalid_jti") if jti is None else cls(jti)


@dataclass(frozen=True, slots=True)
class BootstrapInit:
    """A target presents its bootstrap token to the watching controller (contract §2).

    ``refusal`` is the ``bootstrap_reject`` error of a token id nobody can watch
    (``no_watcher``; ``jti`` is then empty) or of malformed fields (``invalid_message``),
    given once the rate limit let the message through (W3)."""

    TYPE: ClassVar[str] = "bootstrap_init"
    jti: str
    token: str | None = None
    target_pub_key: str | None = None
    target_sig: str | None = None
    protocol: float | None = None
    refusal: str | None = None

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> BootstrapInit | Refusal:
        value = fields.get("jti")
        if not _truthy(value):
            return Refusal("missing_jti")
        jti = _jti(value)
        if jti is None:
            return cls("", refusal="no_watcher")
        token, key = fields.get("token"), fields.get("targetPubKey")
        signature, protocol = fields.get("targetSig"), fields.get("protocol")
        well_formed = (
            _optional_text(token, _MAX_FRAME_CHARS)
            and _optional_text(key, _MAX_FRAME_CHARS)
            and _optional_text(signature, _MAX_SIG_CHARS)
            and ("protocol" not in fields or _positive_int32(protocol))
        )
        if not well_formed:
            return cls(jti, refusal="invalid_message")
        return cls(jti, token, key, signature, protocol)


def _positive_int32(value: Any) -> bool:
    return type(value) is float and value.is_integer() and 0 < value < 2**31


@dataclass(frozen=True, slots=True)
class BootstrapAnswer:
    """The watching controller's answer for the target of ``jti``: its key and signature
    (W4), and for a reject its ``error`` reason. ``malformed``: a field that is not a short
    string, answered ``invalid_message`` once the socket is known to watch ``jti`` (W3
    comes first)."""

    TYPE: ClassVar[str]
    _HAS_ERROR: ClassVar[bool] = False
    jti: str
    controller_pub_key: str | None
    controller_sig: str | None
    error: str | None
    malformed: bool

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Self | Refusal | None:
        jti = fields.get("jti")
        if not _truthy(jti):
            return None
        if not isinstance(jti, str):
            return Refusal("not_watcher")  # W3: nobody watches a token id that is not a string
        key = fields.get("controllerPubKey", fields.get("publicKey"))
        signature = fields.get("controllerSig")
        error = fields.get("error") if cls._HAS_ERROR else None
        if (
            _optional_text(key, _MAX_KEY_CHARS)
            and _optional_text(signature, _MAX_SIG_CHARS)
            and _optional_text(error, _MAX_ERROR_CHARS)
        ):
            return cls(jti, key, signature, error, malformed=False)
        return cls(jti, None, None, None, malformed=True)


@dataclass(frozen=True, slots=True)
class BootstrapAck(BootstrapAnswer):
    """The controller accepts the target."""

    TYPE: ClassVar[str] = "bootstrap_ack"


@dataclass(frozen=True, slots=True)
class BootstrapReject(BootstrapAnswer):
    """The controller refuses the target, with an ``error`` reason."""

    TYPE: ClassVar[str] = "bootstrap_reject"
    _HAS_ERROR: ClassVar[bool] = True


# ---------------------------------------------------------------------- agents and shell


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent registers its device id and key; protocol 2 signs a domain-prefixed
    challenge (contract-shell.md, S1)."""

    TYPE: ClassVar[str] = "agent"
    device_id: str
    public_key: str
    protocol: int

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Agent | Refusal:
        checked = _device_fields(fields, "deviceId", "publicKey")
        if isinstance(checked, Refusal):
            return checked
        return cls(*checked, 2 if fields.get("protocol") == 2 else 1)


@dataclass(frozen=True, slots=True)
class AgentChallengeResponse:
    """The agent's signature of its challenge. ``given`` is False when ``sig`` was missing;
    ``signature`` is None when it was not a base64 string. Both are answered only if a
    challenge is pending (the reference checks that first)."""

    TYPE: ClassVar[str] = "agent_challenge_response"
    signature: bytes | None
    given: bool = True

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> AgentChallengeResponse:
        text: Any = fields.get("sig")
        if not _truthy(text):
            return cls(None, given=False)
        try:
            return cls(b64decode(text))  # B64Error for anything but base64 text
        except B64Error:
            return cls(None)


@dataclass(frozen=True, slots=True)
class Shell:
    """A controller asks for a shell on the agent ``device_id`` holding ``public_key``."""

    TYPE: ClassVar[str] = "shell"
    device_id: str
    public_key: str

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> Shell | Refusal:
        checked = _device_fields(fields, "targetDeviceId", "targetPublicKey")
        return checked if isinstance(checked, Refusal) else cls(*checked)


@dataclass(frozen=True, slots=True)
class AgentSession:
    """Protocol 2: an agent's dedicated socket claims the session announced by ``token``
    (None when ``session`` is not a string: it names no session)."""

    TYPE: ClassVar[str] = "agent_session"
    token: str | None

    @classmethod
    def decode(cls, fields: dict[str, Any], size: int) -> AgentSession:
        token = fields.get("session")
        return cls(token if isinstance(token, str) else None)
