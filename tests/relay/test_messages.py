"""Message types read at the boundary: every declared type decodes to its typed message, and
each declaration is complete (``relay/_messages.py``, ``MESSAGE_TYPES`` in ``protocol.py``).

The answers the core gives for malformed messages are pinned in ``test_core_refusals.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import pytest

from authmesh.core._b64 import b64encode
from authmesh.relay import _messages as messages
from authmesh.relay._config import RelayConfig
from authmesh.relay._messages import (
    ABSENT,
    Agent,
    AgentChallengeResponse,
    AgentSession,
    BootstrapAck,
    BootstrapInit,
    BootstrapReject,
    BootstrapWatch,
    Connect,
    Data,
    Done,
    Listen,
    Ping,
    Refusal,
    Shell,
)
from authmesh.relay._protocol import MESSAGE_TYPES, RelayCore, Route, SharedFact, read

# One valid frame of every client→relay message type and what it decodes to.
VALID: dict[str, tuple[dict[str, Any], object]] = {
    "listen": ({"otc": "482916"}, Listen("482916", 1)),
    "connect": ({"otc": "482916", "protocol": 2.0}, Connect("482916", 2)),
    "data": ({"payload": "aGk"}, Data("aGk", 33)),
    "done": ({}, Done()),
    "ping": ({}, Ping()),
    "bootstrap_watch": ({"jti": "j"}, BootstrapWatch("j")),
    "bootstrap_init": (
        {"jti": "j", "token": "t", "targetPubKey": "k", "targetSig": "s", "protocol": 2.0},
        BootstrapInit("j", "t", "k", "s", 2.0),
    ),
    "bootstrap_ack": (
        {"jti": "j", "publicKey": "P", "controllerSig": "S"},
        BootstrapAck("j", "P", "S", None, malformed=False),
    ),
    "bootstrap_reject": (
        {"jti": "j", "controllerPubKey": "C", "error": "no"},
        BootstrapReject("j", "C", None, "no", malformed=False),
    ),
    "agent": (
        {"deviceId": "am_1", "publicKey": "k", "protocol": 2.0},
        Agent("am_1", "k", 2),
    ),
    "agent_challenge_response": (
        {"sig": b64encode(b"\x01" * 64)},
        AgentChallengeResponse(b"\x01" * 64),
    ),
    "shell": ({"targetDeviceId": "am_1", "targetPublicKey": "k"}, Shell("am_1", "k")),
    "agent_session": ({"session": "token"}, AgentSession("token")),
}

MESSAGE_CLASSES = [
    value
    for value in vars(messages).values()
    if inspect.isclass(value) and dataclasses.is_dataclass(value) and "TYPE" in vars(value)
]


def _read(kind: str, **fields: Any) -> tuple[Any, Any]:
    return read(json.dumps({"type": kind, **fields}, separators=(",", ":")))


def test_every_declared_type_has_a_decoder_a_handler_and_a_valid_sample() -> None:
    assert set(MESSAGE_TYPES) == set(VALID)
    for name, declared in MESSAGE_TYPES.items():
        assert declared.name == name
        assert getattr(RelayCore, declared.handler.__name__) is declared.handler
        fields, expected = VALID[name]
        decoded = declared.decode(fields, 33)
        assert decoded == expected
        assert name == type(decoded).TYPE


def test_every_message_class_is_declared() -> None:
    assert sorted(cls.TYPE for cls in MESSAGE_CLASSES) == sorted(MESSAGE_TYPES)


def test_declared_limiters_exist_and_routes_name_a_field_of_the_message() -> None:
    core_limiters = set(RelayCore(RelayConfig()).sizes())
    for name, declared in MESSAGE_TYPES.items():
        for limiter in declared.limiters:
            assert f"limiter_{limiter}" in core_limiters, (name, limiter)
        if declared.route is not None:
            expected = VALID[name][1]
            assert isinstance(getattr(expected, declared.route.subject), str)


def test_read_gives_the_declaration_and_the_typed_message() -> None:
    declared, message = _read("listen", otc="135791", protocol=2)
    assert declared is MESSAGE_TYPES["listen"] and message == Listen("135791", 2)
    assert declared.route == Route("otc", "otc", claims=True)
    assert _read("listen", otc="1") == (MESSAGE_TYPES["listen"], Refusal("invalid_otc"))
    assert read("null") == (None, Refusal("unknown_type"))
    assert read('{"type":"nope"}') == (None, Refusal("unknown_type"))
    assert read("{") == (None, Refusal("invalid_message"))


def test_data_keeps_its_payload_as_sent_and_counts_the_frame_bytes() -> None:
    text = '{"type":"data","payload":"é"}'
    assert read(text)[1] == Data("é", len(text.encode()))
    assert read(text.encode())[1] == Data("é", len(text.encode()))
    assert read('{"type":"data"}')[1].payload is ABSENT
    assert read('{"type":"data","payload":null}')[1] == Data(None, 30)
    assert read('{"type":"data","payload":{"a":[1]}}')[1].payload == {"a": [1.0]}


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        ("bootstrap_init", {"jti": 5}, BootstrapInit("", refusal="no_watcher")),
        ("bootstrap_init", {"jti": "j", "token": 1}, BootstrapInit("j", refusal="invalid_message")),
        ("bootstrap_init", {"jti": "j", "protocol": 7.0}, BootstrapInit("j", protocol=7.0)),
        ("bootstrap_init", {"jti": ""}, Refusal("missing_jti")),
        (
            "bootstrap_ack",
            {"jti": "j", "controllerSig": 5},
            BootstrapAck("j", None, None, None, True),
        ),
        ("bootstrap_ack", {"jti": 5}, Refusal("not_watcher")),
        ("bootstrap_ack", {"jti": None}, None),
        (
            "bootstrap_reject",
            {"jti": "j", "error": 5},
            BootstrapReject("j", None, None, None, True),
        ),
        ("agent", {"deviceId": "d", "publicKey": "k", "protocol": "2"}, Agent("d", "k", 1)),
        ("agent_challenge_response", {}, AgentChallengeResponse(None, given=False)),
        ("agent_challenge_response", {"sig": "!"}, AgentChallengeResponse(None)),
        ("agent_session", {"session": 5}, AgentSession(None)),
    ],
)
def test_fields_judged_later_travel_with_the_message(
    kind: str, fields: dict[str, Any], expected: object
) -> None:
    assert MESSAGE_TYPES[kind].decode(fields, 0) == expected


def test_shared_reads_come_from_the_declaration() -> None:
    core = RelayCore(RelayConfig())
    core.open(1, "10.0.0.1", 0.0)
    assert core.shared_reads(1, _read("bootstrap_init", jti="j")) == [
        SharedFact("fail", "bootstrap", "10.0.0.1"),
        SharedFact("fail", "bootstrap_prefix", "10.0.0.0/24"),
        SharedFact("jti", "j"),
    ]
    # A jti nobody can watch is refused before the consumed tokens matter.
    assert SharedFact("jti", "") not in core.shared_reads(1, _read("bootstrap_init", jti=5))
    assert core.shared_reads(1, _read("connect", otc="1")) == []  # refused: nothing to read
    assert core.shared_reads(1, _read("data", payload="x")) == []
    assert core.shared_reads(2, _read("listen", otc="482916")) == []  # unknown socket


def test_refusals_use_the_vocabulary_of_the_type() -> None:
    assert MESSAGE_TYPES["listen"].refusal("relay_unavailable") == (
        '{"type":"error","code":"relay_unavailable"}'
    )
    assert MESSAGE_TYPES["bootstrap_init"].refusal("relay_unavailable") == (
        '{"type":"bootstrap_reject","error":"relay_unavailable"}'
    )
