"""What a client gets for each malformed message, type by type, on the core with a fake clock.

These are the reference relay's answers (``spec/relay.md`` §3, the contract's error codes),
including the order in which it checks: some fields are judged only after a rate limit, or
after the socket is known to watch a token or to have a challenge pending. The message
decoders (``relay/_messages.py``) must keep every answer and its order.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.relay.fakerelay import FakeRelay, error

REJECT_INVALID = {"type": "bootstrap_reject", "error": "invalid_message"}
NO_WATCHER = {"type": "bootstrap_reject", "error": "no_watcher"}

# (message type, fields, answer to a socket without any state)
FRESH_SOCKET: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("listen", {}, [error("invalid_otc")]),
    ("listen", {"otc": 482916}, [error("invalid_otc")]),
    ("listen", {"otc": "48291"}, [error("invalid_otc")]),
    ("listen", {"otc": "٤٨٢٩١٦"}, [error("invalid_otc")]),
    ("listen", {"otc": "482916", "protocol": 3}, [error("invalid_message")]),
    ("listen", {"otc": "482916", "protocol": "2"}, [error("invalid_message")]),
    ("listen", {"otc": "482916", "protocol": None}, [error("invalid_message")]),
    ("listen", {"otc": "x", "protocol": 3}, [error("invalid_otc")]),  # the code first
    ("connect", {"otc": ["482916"]}, [error("invalid_otc")]),
    ("connect", {"otc": "482916", "protocol": 1.5}, [error("invalid_message")]),
    ("bootstrap_watch", {}, [error("missing_jti")]),
    ("bootstrap_watch", {"jti": ""}, [error("missing_jti")]),
    ("bootstrap_watch", {"jti": 0}, [error("missing_jti")]),
    ("bootstrap_watch", {"jti": 5}, [error("invalid_jti")]),
    ("bootstrap_watch", {"jti": []}, [error("invalid_jti")]),  # [] is truthy in JavaScript
    ("bootstrap_watch", {"jti": "j" * 129}, [error("invalid_jti")]),
    ("bootstrap_watch", {"jti": "😀" * 65}, [error("invalid_jti")]),  # 130 UTF-16 units
    ("bootstrap_init", {}, [error("missing_jti")]),
    ("bootstrap_init", {"jti": False}, [error("missing_jti")]),
    ("bootstrap_init", {"jti": 5}, [NO_WATCHER]),
    ("bootstrap_init", {"jti": 5, "token": 1}, [NO_WATCHER]),  # the jti first
    ("bootstrap_init", {"jti": "j", "token": 1}, [REJECT_INVALID]),
    ("bootstrap_init", {"jti": "j", "targetSig": "s" * 257}, [REJECT_INVALID]),
    ("bootstrap_init", {"jti": "j", "protocol": 0}, [REJECT_INVALID]),
    ("bootstrap_init", {"jti": "j", "protocol": None}, [REJECT_INVALID]),
    ("bootstrap_init", {"jti": "j", "protocol": 2**31}, [REJECT_INVALID]),
    ("bootstrap_init", {"jti": "j"}, [NO_WATCHER]),
    ("bootstrap_ack", {}, []),  # no jti: dropped unanswered, as the reference does
    ("bootstrap_ack", {"jti": ""}, []),
    ("bootstrap_reject", {"jti": 0.0}, []),
    ("bootstrap_ack", {"jti": 5}, [error("not_watcher")]),
    ("bootstrap_ack", {"jti": "j", "controllerPubKey": 5}, [error("not_watcher")]),
    ("bootstrap_reject", {"jti": "j", "error": "e" * 65}, [error("not_watcher")]),
    ("agent", {}, [error("missing_fields")]),
    ("agent", {"deviceId": "am_1", "publicKey": ""}, [error("missing_fields")]),
    ("agent", {"deviceId": 5, "publicKey": "k"}, [error("invalid_message")]),
    ("agent", {"deviceId": 5, "publicKey": 0}, [error("missing_fields")]),
    ("agent_challenge_response", {}, [error("no_pending_challenge")]),
    ("agent_challenge_response", {"sig": 5}, [error("no_pending_challenge")]),
    ("shell", {"targetDeviceId": "am_1"}, [error("missing_fields")]),
    ("shell", {"targetDeviceId": "am_1", "targetPublicKey": 5}, [error("invalid_message")]),
    ("agent_session", {"session": 5}, [error("no_pending_session")]),
    ("agent_session", {}, [error("no_pending_session")]),
]


@pytest.mark.parametrize(("kind", "fields", "answer"), FRESH_SOCKET)
def test_malformed_messages_get_the_reference_answer(
    kind: str, fields: dict[str, Any], answer: list[dict[str, Any]]
) -> None:
    relay = FakeRelay()
    assert relay.send(relay.open(), type=kind, **fields) == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("null", error("unknown_type")),
        ("[]", error("unknown_type")),
        ('{"type":5}', error("unknown_type")),
        ('{"type":["listen"]}', error("unknown_type")),
        ('{"type":"LISTEN","otc":"482916"}', error("unknown_type")),
        ("{", error("invalid_message")),
        ('{"type":"ping"} {}', error("invalid_message")),
        ('{"type":"ping","x":NaN}', error("invalid_message")),
        (' \t{"type":"ping"}\r\n', {"type": "pong"}),
    ],
)
def test_frames_that_are_not_messages(text: str, answer: dict[str, Any]) -> None:
    relay = FakeRelay()
    assert relay.send_raw(relay.open(), text) == [answer]


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({"controllerPubKey": 5}, error("invalid_message")),
        ({"controllerSig": "s" * 257}, error("invalid_message")),
        ({"publicKey": "k" * 257}, error("invalid_message")),
        ({"controllerPubKey": None, "publicKey": 5}, None),  # controllerPubKey wins
    ],
)
def test_a_watcher_s_malformed_answer_is_invalid_message(
    fields: dict[str, Any], answer: dict[str, Any] | None
) -> None:
    relay = FakeRelay()
    watcher = relay.open()
    relay.send(watcher, type="bootstrap_watch", jti="j")
    for kind in ("bootstrap_ack", "bootstrap_reject"):
        assert relay.send(watcher, type=kind, jti="j", **fields) == ([answer] if answer else [])
        relay.send(watcher, type="bootstrap_watch", jti="j")
    assert relay.send(watcher, type="bootstrap_reject", jti="j", error=5) == [
        error("invalid_message")
    ]


def test_malformed_init_fields_are_judged_after_the_rate_limit() -> None:
    relay = FakeRelay()
    target = relay.open()
    for n in range(10):
        relay.send(target, type="bootstrap_init", jti=f"guess_{n}")
    limited = [{"type": "bootstrap_reject", "error": "rate_limited"}]
    assert relay.send(target, type="bootstrap_init", jti=5) == limited
    assert relay.send(target, type="bootstrap_init", jti="j", token=1) == limited
    assert relay.send(target, type="bootstrap_init") == [error("missing_jti")]


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({}, "missing_signature"),
        ({"sig": ""}, "missing_signature"),
        ({"sig": 5}, "invalid_signature"),
        ({"sig": ["A" * 86]}, "invalid_signature"),
        ({"sig": "!!not base64!!"}, "invalid_signature"),
        ({"sig": "AAAA"}, "invalid_signature"),  # base64, but no signature of this key
    ],
)
def test_a_pending_challenge_s_malformed_response(fields: dict[str, Any], answer: str) -> None:
    relay = FakeRelay()
    agent = relay.open()
    hello = {"deviceId": "am_1", "publicKey": "k"}
    [challenge] = relay.send(agent, type="agent", **hello)
    assert challenge["type"] == "agent_challenge"
    assert relay.send(agent, type="agent_challenge_response", **fields) == [error(answer)]
    # The challenge is spent either way.
    assert relay.send(agent, type="agent_challenge_response", sig="AAAA") == [
        error("no_pending_challenge")
    ]


def test_only_counted_signature_failures_use_up_the_agent_limit() -> None:
    """A missing signature is not a failure; an undecodable one is (the reference's rule)."""
    relay = FakeRelay()
    agent = relay.open()
    for _ in range(12):
        relay.send(agent, type="agent", deviceId="am_1", publicKey="k")
        relay.send(agent, type="agent_challenge_response")
    assert relay.send(agent, type="agent", deviceId="am_1", publicKey="k")[0]["type"] == (
        "agent_challenge"
    )
    for _ in range(10):
        relay.send(agent, type="agent", deviceId="am_1", publicKey="k")
        relay.send(agent, type="agent_challenge_response", sig=5)
    assert relay.send(agent, type="agent", deviceId="am_1", publicKey="k") == [
        error("rate_limited")
    ]
