"""A hostile relay sends a real agent malformed frames; the agent keeps serving."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.hostile_relay import UNHASHABLE_CODES, HostileRelay, attack_agent


def test_agent_survives_a_relay_sending_malformed_frames(tmp_path: Path) -> None:
    assert attack_agent(tmp_path, HostileRelay()) is None


def test_agent_survives_an_error_code_that_is_a_list_or_an_object(tmp_path: Path) -> None:
    assert attack_agent(tmp_path, HostileRelay(UNHASHABLE_CODES, [])) is None
