"""CPU of the relay core alone per received message, in process: no socket, no transport.

One target and one controller are paired on a core with a fake clock; then the target sends
the same message over and over through ``RelayCore.receive`` (the path every frame takes
after the transport: reading, the typed message, the rule, the frame out). Best of
``--rounds`` rounds of ``--count`` messages, as CPU time per message:

- ``data``: a 1 KiB ``data`` frame forwarded to the peer (the relay's hot path);
- ``ping``: the smallest message with an answer;
- ``malformed_listen``: a ``listen`` with a five-digit code (refused ``invalid_otc``).

    .venv/bin/python bench/relaycore_receive.py [--count 100000] [--rounds 7]

To compare with another revision, run it again with ``PYTHONPATH=<checkout>/src``.
"""

from __future__ import annotations

import argparse
import json
import time

from authmesh.relay._config import RelayConfig
from authmesh.relay._protocol import RelayCore
from relay_harness import print_report

MESSAGES = {
    "data": json.dumps({"type": "data", "payload": "x" * 1024}),
    "ping": '{"type":"ping"}',
    "malformed_listen": '{"type":"listen","otc":"12345"}',
}


def paired_core() -> RelayCore:
    """A core whose socket 1 is paired with socket 2, with budgets no run can use up."""
    core = RelayCore(RelayConfig(pairing_session_bytes=2**62, pairing_ttl=1e12))
    core.open(1, "10.0.0.1", 0.0)
    core.open(2, "10.0.0.2", 0.0)
    core.receive(1, '{"type":"listen","otc":"123456"}', 0.0)
    core.receive(2, '{"type":"connect","otc":"123456"}', 0.0)
    return core


def ns_per_message(core: RelayCore, text: str, count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            core.receive(1, text, 1.0)
        best = min(best, (time.process_time() - started) / count)
    return round(best * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    core = paired_core()
    results = {
        f"{name}_ns": ns_per_message(core, text, args.count, args.rounds)
        for name, text in MESSAGES.items()
    }
    print_report("relaycore_receive", {}, results)


if __name__ == "__main__":
    main()
