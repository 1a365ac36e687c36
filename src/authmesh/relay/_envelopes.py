"""What relay instances send each other over Redis: small typed envelopes and their codec.

Each envelope is one line of text, ``<op>|<fields>``, the last field free text (a frame may
contain anything, ``|`` included). Several envelopes bound for one instance travel in one
PUBLISH, each prefixed with its length (:func:`bundle`, :func:`unbundle`).

A socket is named across instances by its *origin*, ``<instance>:<socket id>`` on the
instance that holds the TCP connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from authmesh.relay._jsonwire import JsonWireError, dumps, loads

log = logging.getLogger("authmesh.relay")

__all__ = [
    "AgentMoved",
    "Closed",
    "Envelope",
    "EnvelopeError",
    "Frame",
    "HandOver",
    "Message",
    "Shut",
    "bundle",
    "decode",
    "encode",
    "unbundle",
]


class EnvelopeError(ValueError):
    """Text that is not an envelope (another version, or corruption)."""


@dataclass(frozen=True, slots=True)
class HandOver:
    """A socket of ``origin`` is handled by the receiving instance from now on; ``facts``
    are the shared facts its sender read for the first message (or None)."""

    origin: str
    client: str
    facts: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the socket ``origin``, to the instance handling it."""

    origin: str
    text: str


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame for the receiver's own socket ``socket``."""

    socket: int
    text: str


@dataclass(frozen=True, slots=True)
class Shut:
    """Close the receiver's own socket ``socket``."""

    socket: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The socket ``origin`` is gone."""

    origin: str


@dataclass(frozen=True, slots=True)
class AgentMoved:
    """The agent registered on the sending instance: the receiver retires its own."""

    agent_id: str


Envelope = HandOver | Message | Frame | Shut | Closed | AgentMoved


def encode(envelope: Envelope) -> str:
    match envelope:
        case Message(origin, text):
            return f"R|{origin}|{text}"
        case Frame(socket, text):
            return f"S|{socket}|{text}"
        case Shut(socket, code, reason):
            return f"X|{socket}|{code}|{reason}"
        case HandOver(origin, client, facts):
            return f"O|{origin}|{client}" + (f"|{dumps(facts)}" if facts else "")
        case Closed(origin):
            return f"C|{origin}"
        case AgentMoved(agent_id):
            return f"A|{agent_id}"
    raise TypeError(f"not an envelope: {envelope!r}")


def decode(text: str) -> Envelope:
    """The envelope in ``text``; :class:`EnvelopeError` if it is none."""
    op, _, rest = text.partition("|")
    try:
        if op == "R":
            origin, _, message = rest.partition("|")
            return Message(origin, message)
        if op == "S":
            socket, _, frame = rest.partition("|")
            return Frame(int(socket), frame)
        if op == "X":
            socket, code, reason = rest.split("|", 2)
            return Shut(int(socket), int(code), reason)
        if op == "O":
            origin, client, *facts = rest.split("|", 2)
            return HandOver(origin, client, _facts(facts[0]) if facts else None)
        if op == "C":
            return Closed(rest)
        if op == "A":
            return AgentMoved(rest)
    except ValueError:
        pass
    raise EnvelopeError(f"not a relay envelope (op {op[:8]!r})")


def _facts(text: str) -> list[Any] | None:
    """Facts that came with a hand-over; None (they are read again) when malformed."""
    try:
        value = loads(text)
    except JsonWireError:
        return None
    return value if isinstance(value, list) and len(value) % 2 == 0 else None


def bundle(envelopes: list[str]) -> str:
    """Envelopes for one instance as one published message, each prefixed by its length."""
    return "".join(f"{len(envelope)}:{envelope}" for envelope in envelopes)


def unbundle(text: str) -> list[str]:
    """The envelopes of one published message (those before a fault, if it is malformed)."""
    envelopes: list[str] = []
    position = 0
    while position < len(text):
        colon = text.find(":", position)
        length = text[position:colon]
        if colon < 0 or not length.isascii() or not length.isdigit():
            log.warning("malformed cluster message", extra={"event": "cluster_envelope"})
            break
        end = colon + 1 + int(length)
        envelopes.append(text[colon + 1 : end])
        position = end
    return envelopes
