"""Hostile-input campaign against a real relay, a real shell agent and every verifier adapter.

The same campaigns as ``tests/hostile/``, larger: the relay gets the fixed corpus plus
``--relay-mutations`` seeded byte mutations while legitimate pairs keep pairing; the agent
gets every bad handshake and session input ``--agent-rounds`` times, then its granted
controller opens a shell, and another agent gets malformed frames from a hostile relay;
each adapter behind each server gets ``--verifier-examples`` hypothesis-generated requests
without a valid signature, plus the Content-Length values that are no ASCII number (issue
10 item 5).

    .venv/bin/python bench/hostile_inputs.py [--relay-mutations 20000] [--agent-rounds 4]
        [--verifier-examples 1000]

Inputs are counted once per distinct byte string. The last line is the figures line of
docs/security.md. Attacks are the campaign's goals, each held or not:

relay: crash it; get a 5xx; get an answer outside the protocol (an unknown frame, an
undocumented close code, silence); deny pairing to others meanwhile.
agent: crash it (from a controller or from the relay); keep a bad session alive; lock the
granted controller out.
verifier: get a 5xx; get a request accepted without a valid signature.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile.agent_campaign import run_agent_campaign
from tests.hostile.agent_setup import agent_under_attack
from tests.hostile.hostile_relay import UNHASHABLE_CODES, HostileRelay, attack_agent
from tests.hostile.relay_campaign import RELAY_ENV, run_relay_campaign
from tests.hostile.relay_corpus import base_frames, mutated
from tests.hostile.tally import Tally
from tests.hostile.verifier_campaign import (
    probe_lengths,
    probe_server,
    servers,
    use_verifier,
)
from tests.support.relayproc import start_relay
from tests.support.shell import run_shell


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def _timed(what: str, run: Callable[[], Any]) -> Any:
    wall, cpu = time.monotonic(), _cpu()
    result = run()
    print(f"{what}: {time.monotonic() - wall:.1f} s wall, {_cpu() - cpu:.1f} s CPU", flush=True)
    return result


def relay_campaign(mutations: int) -> tuple[Tally, dict[str, bool]]:
    relay = start_relay(RELAY_ENV)
    try:
        frames = base_frames()
        corpus = frames + mutated(frames, mutations, seed=10)
        tally, pairings = asyncio.run(run_relay_campaign(relay, corpus))
    finally:
        relay.stop()
    failures = tally.failures
    held = {
        "relay: crash": tally.crashes == 0,
        "relay: 5xx": not any("HTTP" in f for f in failures),
        "relay: answer outside the protocol": not any(
            "legitimate" not in f and "HTTP" not in f for f in failures
        ),
        "relay: deny pairing to others": pairings >= 2
        and not any("legitimate" in f for f in failures),
    }
    print(f"relay: {tally.distinct} distinct inputs, {pairings} legitimate pairings meanwhile")
    return tally, held


def agent_campaign(rounds: int) -> tuple[Tally, dict[str, bool]]:
    with (
        tempfile.TemporaryDirectory(prefix="amesh-hostile-") as scratch,
        agent_under_attack(Path(scratch)) as setup,
    ):
        tally = asyncio.run(run_agent_campaign(setup.target, rounds=rounds))
        alive = setup.agent.process.poll() is None
        log = setup.agent.log()
        shell = run_shell(
            setup.controller_home,
            setup.relay,
            setup.scratch,
            "-c",
            "echo still-granted",
            target=setup.target.target_name,
        )
    if not alive or "Traceback" in log or "failed unexpectedly" in log:
        tally.crashes += 1
    for frames in [HostileRelay(), HostileRelay(UNHASHABLE_CODES, [])]:
        frames.record(tally)
        with tempfile.TemporaryDirectory(prefix="amesh-hostile-") as scratch:
            problem = attack_agent(Path(scratch), frames)
        if problem is not None:
            tally.crashes += "died" in problem or "failure" in problem
            tally.fail(f"hostile relay: {problem}")
    held = {
        "agent: crash": tally.crashes == 0,
        "agent: keep a bad session alive": not any("session" in f for f in tally.failures),
        "agent: lock the granted controller out": shell.returncode == 0
        and shell.stdout == "still-granted\n",
    }
    print(f"agent: {tally.distinct} distinct inputs")
    return tally, held


def verifier_campaign(examples: int) -> tuple[Tally, dict[str, bool]]:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="amesh-hostile-") as home:
        for name, dispatcher, server in servers():
            with server(dispatcher) as port:
                use_verifier(dispatcher, Path(home) / name)
                probe_server(name, port, examples, tally)
                probe_lengths(name, port, tally)
    held = {
        "verifier: 5xx": tally.crashes == 0,
        "verifier: accepted without a valid signature": not any(
            "accepted" in f for f in tally.failures
        ),
    }
    print(f"verifier: {tally.distinct} distinct inputs over {len(servers())} servers")
    return tally, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relay-mutations", type=int, default=20_000)
    parser.add_argument("--agent-rounds", type=int, default=4)
    parser.add_argument("--verifier-examples", type=int, default=1_000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per refused request
    results = [
        _timed("relay", lambda: relay_campaign(args.relay_mutations)),
        _timed("agent", lambda: agent_campaign(args.agent_rounds)),
        _timed("verifier", lambda: verifier_campaign(args.verifier_examples)),
    ]
    held: dict[str, bool] = {}
    for tally, goals in results:
        held.update(goals)
        for failure in tally.failures[:10]:
            print(f"  FOUND: {failure[:300]}")
    for goal, ok in held.items():
        print(f"  {'held' if ok else 'BROKEN'}: {goal}")
    relay, agent, verifier = (tally for tally, _ in results)
    total = relay.distinct + agent.distinct + verifier.distinct
    crashes = relay.crashes + agent.crashes + verifier.crashes
    print(
        f"{total:,} distinct bad inputs: relay {relay.distinct:,}, agent {agent.distinct:,}, "
        f"verifier {verifier.distinct:,}; crashes {crashes}; "
        f"attacks held {sum(held.values())}/{len(held)}"
    )


if __name__ == "__main__":
    main()
