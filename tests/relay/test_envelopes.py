"""The codec of what relay instances send each other (``relay/_envelopes.py``)."""

from __future__ import annotations

import pytest

from authmesh.relay._envelopes import (
    AgentMoved,
    Closed,
    Envelope,
    EnvelopeError,
    Frame,
    HandOver,
    Message,
    Shut,
    bundle,
    decode,
    encode,
    unbundle,
)

ENVELOPES: list[Envelope] = [
    Message("a1b2:7", '{"type":"data","payload":"x|y"}'),
    Message("a1b2:7", ""),
    Frame(42, '{"type":"peer_found"}'),
    Shut(42, 1011, "peer_disconnected"),
    Shut(3, 1000, "with | a bar"),
    HandOver("a1b2:7", "203.0.113.9", ["3", 59000, "", -2]),
    HandOver("a1b2:7", "2001:db8::/64"),
    Closed("a1b2:7"),
    AgentMoved("am_device|id"),
]


@pytest.mark.parametrize("envelope", ENVELOPES, ids=repr)
def test_every_envelope_survives_encoding(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@pytest.mark.parametrize("text", ["", "Z|1", "S|x|{}", "X|1|2", "X|1|two|r", "O|only-origin"])
def test_text_that_is_no_envelope_is_refused(text: str) -> None:
    with pytest.raises(EnvelopeError):
        decode(text)


def test_malformed_hand_over_facts_are_dropped_not_trusted() -> None:
    assert decode("O|a:1|10.0.0.1|not json") == HandOver("a:1", "10.0.0.1", None)
    assert decode('O|a:1|10.0.0.1|["odd"]') == HandOver("a:1", "10.0.0.1", None)


def test_bundles_keep_order_and_content() -> None:
    texts = [encode(envelope) for envelope in ENVELOPES]
    assert unbundle(bundle(texts)) == texts


@pytest.mark.parametrize("tail", ["x:abc", "٣:abc", "12"])
def test_a_malformed_bundle_yields_what_came_before_the_fault(tail: str) -> None:
    good = bundle(["R|a:1|one", "C|a:1"])
    assert unbundle(good + tail) == ["R|a:1|one", "C|a:1"]
