"""Session admission rules of the agent, on a fake clock (issue 10 item 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authmesh.core.shell._admission import SessionSlots


def test_pending_handshakes_do_not_count_against_max_sessions() -> None:
    slots = SessionSlots(max_sessions=1, max_pending=3, pending_timeout=10)
    for key in (1, 2, 3):
        assert slots.request(key, now=0) is None
    assert (slots.active, slots.pending) == (0, 3)
    assert slots.authenticate(3, now=1)
    assert (slots.active, slots.pending) == (1, 2)


def test_a_full_pending_budget_evicts_the_oldest_request() -> None:
    slots = SessionSlots(max_sessions=1, max_pending=2, pending_timeout=10)
    slots.request(1, now=0)
    slots.request(2, now=1)
    assert slots.request(3, now=2) == 1
    assert not slots.authenticate(1, now=3)
    assert slots.authenticate(3, now=3)


def test_a_handshake_past_its_deadline_is_not_admitted() -> None:
    slots = SessionSlots(max_sessions=1, max_pending=2, pending_timeout=10)
    slots.request(1, now=0)
    assert slots.deadline(1) == 10
    assert not slots.authenticate(1, now=10)
    assert slots.pending == 0 and slots.deadline(1) is None


def test_authenticated_sessions_are_capped_and_released() -> None:
    slots = SessionSlots(max_sessions=1, max_pending=4, pending_timeout=10)
    slots.request(1, now=0)
    slots.request(2, now=0)
    assert slots.authenticate(1, now=1)
    assert not slots.authenticate(2, now=1)
    slots.release(1)
    slots.request(3, now=2)
    assert slots.authenticate(3, now=2)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SessionSlots(max_sessions=0)


_steps = st.lists(
    st.tuples(st.sampled_from(["request", "authenticate", "release"]), st.integers(0, 20)),
    max_size=80,
)


@given(_steps)
def test_budgets_hold_for_any_order_of_events(steps: list[tuple[str, int]]) -> None:
    slots = SessionSlots(max_sessions=2, max_pending=3, pending_timeout=5)
    for now, (event, key) in enumerate(steps):
        if event == "request":
            slots.request(key + now * 100, now)  # every request is new
        elif event == "authenticate":
            slots.authenticate(key, now)
        else:
            slots.release(key)
        assert slots.active <= 2 and slots.pending <= 3
