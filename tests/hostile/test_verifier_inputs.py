"""Hypothesis-generated hostile requests against each adapter behind its real server.

Headers, targets, Content-Length values and bodies are hostile and no signature is valid
(``verifier_requests.py``): every request must be refused, none with a 5xx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.hostile.tally import Tally
from tests.hostile.verifier_campaign import probe_lengths, probe_server, servers, use_verifier

EXAMPLES = 120


def campaign(server: tuple[str, Any, int], home: Path) -> None:
    name, dispatcher, port = server
    use_verifier(dispatcher, home / name)
    tally = Tally()
    probe_server(name, port, EXAMPLES, tally)
    assert tally.failures == []
    assert tally.crashes == 0
    assert tally.distinct >= EXAMPLES // 2


def test_no_hostile_request_is_accepted_or_answered_with_5xx(
    adapter: tuple[str, Any, int], tmp_path: Path
) -> None:
    campaign(adapter, tmp_path)


def test_behind_wsgiref_no_hostile_request_is_accepted_or_answered_with_5xx(
    wsgiref_adapter: tuple[str, Any, int], tmp_path: Path
) -> None:
    campaign(wsgiref_adapter, tmp_path)


# Issue 10 item 5 and its Django twin: before the fix the WSGI adapter int()ed a "²" length
# and the Django adapter let request.body int() any length (500 for "NaN", "0x10", "1e3").
def test_a_length_that_is_no_ascii_number_is_refused_without_5xx(tmp_path: Path) -> None:
    tally = Tally()
    for name, dispatcher, server in servers():
        with server(dispatcher) as port:
            use_verifier(dispatcher, tmp_path / name)
            probe_lengths(name, port, tally)
    assert tally.failures == []
