"""Hostile frames and HTTP requests against a real relay process (issue 10, proof).

Only the network is used (WebSocket frames and HTTP), so the test holds whatever the relay's
transport is. ``bench/hostile_inputs.py`` runs the same campaign with many more mutations.
"""

from __future__ import annotations

from typing import Any

from tests.hostile.relay_campaign import RELAY_ENV, run_relay_campaign
from tests.hostile.relay_corpus import base_frames, mutated

MUTATIONS = 300


async def test_relay_survives_every_bad_frame_and_keeps_pairing_others(
    relay_factory: Any,
) -> None:
    relay = relay_factory(RELAY_ENV)
    frames = base_frames()
    tally, pairings = await run_relay_campaign(relay, frames + mutated(frames, MUTATIONS, seed=10))
    assert tally.failures == []
    assert tally.crashes == 0
    assert pairings >= 2
    assert tally.distinct > len(frames)
