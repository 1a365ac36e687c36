"""Every scenario of ``shell-relay.json`` (agent registration and shell routing) replayed
against a real relay process.

The recorded agents use the ``shell.json`` identities, whose private keys are known, so
challenge responses are re-signed with the very same keys. The recordings list a frame caused
by a close just before that close; the converter puts such frames after their cause. Where our
relay deliberately differs, ``ADAPTED`` rewrites the expectations and names the weakness of
``spec/relay.md`` §8 (or ``spec/shell.md`` §2.2) that is fixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from authmesh.core._keys import PrivateKey
from tests.conformance.ledger import record
from tests.relay.replay import Replay, Step, custom, error, replace, send, silent, time_passes, to
from tests.support.relay_clients import wait_for, wait_idle
from tests.support.relayproc import RelayProcess
from tests.support.vectorfiles import load

SCENARIOS = {s["name"]: s for s in load("shell-relay.json")["scenarios"]}
IDENTITIES = [
    PrivateKey.from_scalar(bytes.fromhex(i["private_key_hex"]))
    for i in load("shell.json")["identities"]
]
PEER_FOUND = {"type": "peer_found"}
EXPIRED = {"type": "error", "code": "session_expired"}
PEER_GONE = {"type": "error", "code": "peer_disconnected"}


def convert(transcript: list[dict[str, Any]]) -> list[Step]:
    """shell-relay events -> replay steps (connect on first use; 1005 = the client closed)."""
    steps: list[Step] = []
    connected: set[str] = set()
    for event in transcript:
        who, direction, text = event["who"], event["dir"], event["json"]
        if who not in connected:
            connected.add(who)
            steps.append({"from": f"client-{who}", "event": "ws_connect", "path": "/ws"})
        if direction == "send":
            try:
                steps.append(send(who, json.loads(text), raw=text))
            except ValueError:
                steps.append(send(who, text, not_json=True))
        elif direction == "recv":
            steps.append({**to(who, json.loads(text)), "raw": text})
        else:
            close = json.loads(text)
            if close["code"] == 1005:
                steps.append({"from": f"client-{who}", "opcode": "close", "close_code": 1000})
            else:
                steps.append(
                    {
                        "from": f"relay→{who}",
                        "opcode": "close",
                        "close_code": close["code"],
                        "close_reason": close["reason"],
                    }
                )
    # A peer_disconnected is caused by the close that the recording lists right after it.
    for index in range(len(steps) - 1):
        first, second = steps[index], steps[index + 1]
        closer = second["from"].removeprefix("client-")
        if (
            first.get("frame") == PEER_GONE
            and second.get("opcode") == "close"
            and second["from"].startswith("client-")
            and first["from"] != f"relay→{closer}"
        ):
            steps[index], steps[index + 1] = second, first
    return steps


def _squatting(steps: list[Step]) -> list[Step]:
    # W5: mallory cannot claim the victim's device id; the victim registers and is routed.
    def index(who: str, frame: dict[str, Any]) -> int:
        return next(
            i for i, s in enumerate(steps) if s.get("from") == who and s.get("frame") == frame
        )

    conflict = index("relay→victim_agent", {"type": "error", "code": "device_id_conflict"})
    mallory_ok = index("relay→mallory", {"type": "agent_registered"})
    found = index("relay→controller", PEER_FOUND)
    return replace(
        steps,
        {
            mallory_ok: [error("mallory", "invalid_device_id")],
            conflict: [to("victim_agent", {"type": "agent_registered"})],
            found: [
                to("victim_agent", PEER_FOUND),
                to("controller", PEER_FOUND),
                silent("mallory"),
            ],
        },
    )


def _hijack(steps: list[Step]) -> list[Step]:
    # W7: a second shell request to a busy agent gets the uniform reply and re-binds nothing.
    head = steps[: next(i for i, s in enumerate(steps) if s.get("from") == "client-intruder")]
    return [
        *head,
        {"from": "client-intruder", "event": "ws_connect", "path": "/ws"},
        send("intruder", json.loads(steps[len(head) + 1]["raw"])),
        to("intruder", PEER_FOUND),
        send("agent", {"type": "data", "payload": "b3V0cHV0"}),
        to("controller", {"type": "data", "payload": "b3V0cHV0"}),
        silent("intruder"),
        send("controller", {"type": "data", "payload": "aW5wdXQ="}),
        to("agent", {"type": "data", "payload": "aW5wdXQ="}),
        {"from": "client-intruder", "opcode": "close", "close_code": 1000},
        silent("agent"),
        send("controller", {"type": "data", "payload": "aW5wdXQy"}),
        to("agent", {"type": "data", "payload": "aW5wdXQy"}),
    ]


def _done(steps: list[Step]) -> list[Step]:
    after_done = next(
        i for i, s in enumerate(steps) if s.get("frame") == {"type": "data", "payload": "AAAA"}
    )
    return [*steps[: after_done + 1], silent("agent"), *steps[after_done + 1 :]]


def _rate_limit_hits(steps: list[Step]) -> list[Step]:
    # W6: successful routes do not count; controllers 5 and 6 are routed like the others.
    changes: dict[int, list[Step]] = {}
    for index, step in enumerate(steps):
        if step.get("frame") == {"type": "error", "code": "rate_limited"}:
            who = step["from"].removeprefix("relay→")
            changes[index] = [
                to("agent", PEER_FOUND),
                to(who, PEER_FOUND),
                {"from": f"client-{who}", "opcode": "close", "close_code": 1000},
                to("agent", PEER_GONE),
            ]
        elif step.get("opcode") == "close" and step["from"] in (
            "client-controller_5",
            "client-controller_6",
        ):
            changes[index] = []
    return replace(steps, changes)


def _max_payload(steps: list[Step]) -> list[Step]:
    envelope = len('{"type":"data","payload":""}')
    exact = json.dumps(
        {"type": "data", "payload": "A" * (65_536 - envelope)}, separators=(",", ":")
    )
    over = json.dumps({"type": "data", "payload": "A" * (65_537 - envelope)}, separators=(",", ":"))
    first = _after_shell(steps) + 1
    return [
        *steps[:first],
        send("controller", exact, not_json=True),
        {**to("agent", {}), "raw": exact},
        send("controller", over, not_json=True),
        {"from": "relay→controller", "opcode": "close", "close_code": 1009, "close_reason": ""},
        to("agent", PEER_GONE),
        {"from": "client-agent", "opcode": "close", "close_code": 1000},
    ]


def _after_shell(steps: list[Step]) -> int:
    return next(
        i
        for i, s in enumerate(steps)
        if s.get("frame") == PEER_FOUND and s["from"] == "relay→controller"
    )


def _idle_lazy(steps: list[Step]) -> list[Step]:
    # W7/W9: idle expiry (not a fixed 10 min), both sides told, the agent socket stays open.
    mark, idle_passes = time_passes(SHELL_IDLE + 0.2)
    found = _after_shell(steps)
    return [
        *steps[: found + 1],
        mark,
        idle_passes,
        send("controller", {"type": "data", "payload": "AAAA"}),
        to("agent", EXPIRED),
        to("controller", EXPIRED),
        {"from": "relay→controller", "opcode": "close", "close_code": 1000, "close_reason": ""},
        send("agent", {"type": "ping"}),
        to("agent", {"type": "pong"}),
    ]


def _idle_sweep(steps: list[Step]) -> list[Step]:
    # W7: the sweep ends the idle session; the agent's registration socket is NOT closed.
    found = _after_shell(steps)

    async def agent_still_registered(replay: Replay) -> None:
        assert replay.relay.health() == {"status": "ok", "sessions": 0, "agents": 1}

    return [
        *steps[: found + 1],
        to("agent", EXPIRED),
        to("controller", EXPIRED),
        {"from": "relay→controller", "opcode": "close", "close_code": 1000, "close_reason": ""},
        custom(agent_still_registered),
        send("agent", {"type": "ping"}),
        to("agent", {"type": "pong"}),
    ]


def _heartbeat(steps: list[Step]) -> list[Step]:
    shell = next(i for i, s in enumerate(steps) if s["from"] == "client-controller")

    async def agent_dropped(replay: Replay) -> None:
        await wait_for(lambda: replay.relay.health()["agents"] == 0)

    return [*steps[:shell], custom(agent_dropped), *steps[shell:-4], silent("agent"), *steps[-4:]]


SHELL_IDLE = 0.5

ADAPTED: dict[str, tuple[str, Callable[[list[Step]], list[Step]], dict[str, str]]] = {
    "device_id_squatting_and_conflict": ("W5", _squatting, {}),
    "session_hijack_by_second_shell_request": ("W7", _hijack, {}),
    "done_message": ("none (silence made explicit)", _done, {}),
    "shell_rate_limit_hits": ("W6", _rate_limit_hits, {}),
    "max_payload_64KiB": ("none (abbreviated frames made concrete)", _max_payload, {}),
    "shell_session_ttl_lazy_expiry": (
        "W7, W9",
        _idle_lazy,
        {"AMESH_SHELL_IDLE_TIMEOUT": str(SHELL_IDLE), "AMESH_SWEEP_INTERVAL": "600"},
    ),
    "shell_session_ttl_purge_closes_agent_socket": (
        "W7",
        _idle_sweep,
        {"AMESH_SHELL_IDLE_TIMEOUT": str(SHELL_IDLE), "AMESH_SWEEP_INTERVAL": "0.05"},
    ),
    "agent_heartbeat_staleness": (
        "none (timers shortened)",
        _heartbeat,
        {"AMESH_AGENT_HEARTBEAT_TIMEOUT": "0.3", "AMESH_SWEEP_INTERVAL": "0.05"},
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_shell_scenario(name: str, shared_relay: RelayProcess, relay_factory: Any) -> None:
    steps = convert(SCENARIOS[name]["transcript"])
    env: dict[str, str] = {}
    if name in ADAPTED:
        _, transform, env = ADAPTED[name]
        steps = transform(steps)
    if env:
        await Replay(relay_factory(env), steps, known_keys=IDENTITIES).run()
    else:
        client_ip = f"10.98.{list(SCENARIOS).index(name)}.1"
        await Replay(shared_relay, steps, client_ip=client_ip, known_keys=IDENTITIES).run()
        await wait_idle(shared_relay)
    record("shell-relay.json", "scenarios", name)
