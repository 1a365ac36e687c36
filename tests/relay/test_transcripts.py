"""Every scenario of ``relay-transcripts.json`` replayed against a real relay process.

Scenarios run unchanged unless listed in ``ADAPTED``: there our hardened relay deliberately
answers differently, the adaptation rewrites the expected steps to OUR behaviour and names the
weakness of ``spec/relay.md`` §8/§11 it fixes. Time-based scenarios run with short timers set
through the relay's environment and wait on observable conditions instead of wall-clock marks.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conformance.ledger import record
from tests.relay.replay import (
    Replay,
    Step,
    alive,
    custom,
    error,
    health,
    replace,
    send,
    silent,
    time_passes,
    to,
)
from tests.support.relay_clients import RECV_DEADLINE, SHARED_ENV, open_client, wait_for, wait_idle
from tests.support.relayproc import RelayProcess
from tests.support.vectorfiles import load

SCENARIOS = {scenario["name"]: scenario for scenario in load("relay-transcripts.json")}
ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
JTI = "bt_3f9a1c0e5b7d4a2e9c8f1b6d0a4e7c21"


def expect_frame(index: int, who: str, frame: dict[str, Any]) -> Callable[[list[Step]], None]:
    def check(steps: list[Step]) -> None:
        assert steps[index]["from"] == f"relay→{who}" and steps[index]["frame"] == frame

    return check


@dataclass
class Adapted:
    """Why and how a scenario's expectations differ for our relay."""

    weakness: str
    transform: Callable[[list[Step]], list[Step]]
    env: dict[str, str] = field(default_factory=dict)


def relay_env(config: dict[str, Any]) -> dict[str, str]:
    """The scenario's relay configuration as our environment variables."""
    env = {k: v for k, v in config.get("env", {}).items() if k.startswith("AMESH_")}
    options = config.get("options", {})
    if "maxSessions" in options:
        env["AMESH_MAX_SESSIONS"] = str(options["maxSessions"])
    if "maxConnections" in options:
        env["AMESH_MAX_CONNECTIONS"] = str(options["maxConnections"])
    return env


# ---------------------------------------------------------------------------- describe steps


def _bom_ping(steps: list[Step]) -> list[Step]:
    assert steps[6]["describe"].startswith("UTF-8 BOM")
    return replace(steps, {6: [send("A", '\ufeff{"type":"ping"}', not_json=True)]})


def _padded_ping(size: int) -> str:
    frame = '{"type":"ping","pad":"' + "x" * size + '"}'
    return frame


def _max_payload(steps: list[Step]) -> list[Step]:
    exact = _padded_ping(65_536 - len(_padded_ping(0)))
    over = _padded_ping(65_537 - len(_padded_ping(0)))
    assert len(exact.encode()) == 65_536 and len(over.encode()) == 65_537
    return replace(
        steps, {2: [send("A", exact, not_json=True)], 4: [send("A", over, not_json=True)]}
    )


# ---------------------------------------------------------------------------- W1 crashes


def _crash_null(steps: list[Step]) -> list[Step]:
    return [*steps[:7], error("A", "unknown_type"), silent("B"), alive(), *health(1)]


def _crash_sig(steps: list[Step]) -> list[Step]:
    return [*steps[:9], error("G", "invalid_signature"), silent("B"), alive(), *health(1)]


def _crash_pubkey(steps: list[Step]) -> list[Step]:
    return [
        *steps[:3],
        error("G", "invalid_message"),
        steps[4],
        error("G", "no_pending_challenge"),
        alive(),
        *health(0),
    ]


# ---------------------------------------------------------------------------- W2 bindings


def _invalid_otc(steps: list[Step]) -> list[Step]:
    expect_frame(57, "A", {"type": "error", "code": "rate_limited"})(steps)
    busy = [error("A", "already_in_session")]
    return replace(steps, {49: busy, 51: busy, 53: busy, 55: busy, 57: busy})


def _otc_in_use(steps: list[Step]) -> list[Step]:
    expect_frame(9, "A", {"type": "error", "code": "otc_in_use"})(steps)
    return replace(steps, {9: [error("A", "already_in_session")]})


def _listen_twice(steps: list[Step]) -> list[Step]:
    return [
        *steps[:5],
        error("A", "already_in_session"),
        *health(1),
        *steps[8:11],
        *health(0),
        *steps[13:16],
        error("B", "otc_not_found"),
        steps[17],
        silent("B"),
    ]


def _self_connect(steps: list[Step]) -> list[Step]:
    return [*steps[:5], error("A", "already_in_session"), steps[7], silent("A")]


def _stale_otc(steps: list[Step]) -> list[Step]:
    return [
        *steps[:16],
        silent("C"),
        *steps[17:20],
        silent("C"),
        *health(1),
        *steps[23:26],
        to("C", PEER_FOUND),
        to("D", PEER_FOUND),
    ]


def _shared_bucket(steps: list[Step]) -> list[Step]:
    busy = [error("A", "already_in_session")]
    return replace(steps, {5: busy, 7: busy, 9: busy, 11: busy, 13: busy})


def _session_cap(steps: list[Step]) -> list[Step]:
    expect_frame(20, "C", {"type": "error", "code": "rate_limited"})(steps)
    return replace(steps, {20: [error("C", "already_in_session")]})


# ---------------------------------------------------------------------------- W6 limits


def _acks_instead_of_rate_limited(steps: list[Step]) -> list[Step]:
    changes = {}
    for index, step in enumerate(steps):
        if step.get("frame") == {"type": "error", "code": "rate_limited"}:
            changes[index] = [to(step["from"].removeprefix("relay→"), ACK)]
    assert changes
    return replace(steps, changes)


def _rate_limit_listen(steps: list[Step]) -> list[Step]:
    return [*_acks_instead_of_rate_limited(steps[:28]), *health(7)]


def _successful_pairings(steps: list[Step]) -> list[Step]:
    return [*steps[:25], to("T3", PEER_FOUND), to("C3", PEER_FOUND)]


def _five_failures_per_address(steps: list[Step]) -> list[Step]:
    # The reference counts a failed connect twice (3 allowed); ours allows 5 failures.
    not_found = [error("B", "otc_not_found")]
    return replace(steps, {9: not_found, 11: not_found})


def _bruteforce_within_one_network(steps: list[Step]) -> list[Step]:
    # The 20 "rotating" addresses share one /24, whose budget (4 x 5 failures) they use up:
    # the 21st and 22nd addresses of that network get no guess, even at a live code.
    expect_frame(91, "U", PEER_FOUND)(steps)
    return [*steps[:91], error("V", "rate_limited"), *steps[93:96], error("W", "rate_limited")]


def _watch_rate_limit(steps: list[Step]) -> list[Step]:
    expect_frame(27, "W", {"type": "error", "code": "rate_limited"})(steps)
    return replace(steps, {27: [to("W", {"type": "bootstrap_watching", "jti": "bt_rl_11"})]})


def _init_rate_limited(steps: list[Step]) -> list[Step]:
    limited = {"type": "bootstrap_reject", "error": "rate_limited"}
    return [step if i < 22 or i % 2 == 0 else to("T", limited) for i, step in enumerate(steps)]


# ---------------------------------------------------------------------------- W3/W4 bootstrap


def _bootstrap_happy(steps: list[Step]) -> list[Step]:
    ack = {
        "type": "bootstrap_ack",
        "jti": JTI,
        "controllerPubKey": "A6pMDVbv4ajRW6syr6lc2CH/qrRgCr4baU8GRiSiYv1m",
        "controllerSig": steps[9]["frame"]["controllerSig"],
    }
    return replace(steps, {10: [to("T", ack)]})


def _reject_forward(steps: list[Step]) -> list[Step]:
    reject = {"type": "bootstrap_reject", "jti": JTI, "error": "operator_declined"}
    return replace(steps, {9: [to("T", reject)]})


def _foreign_ack(steps: list[Step]) -> list[Step]:
    return [
        *steps[:11],
        error("X", "not_watcher"),
        silent("T"),
        *steps[12:15],
        error("X2", "jti_already_watched"),
    ]


def _ack_before_init(steps: list[Step]) -> list[Step]:
    forwarded = {"type": "bootstrap_init", "jti": JTI, "token": steps[10]["frame"]["token"]}
    return [*steps[:7], error("X", "not_watcher"), *steps[8:11], to("W", forwarded), silent("T")]


def _target_disconnect(steps: list[Step]) -> list[Step]:
    return [*steps[:15], error("X", "jti_already_watched")]


# ---------------------------------------------------------------------------- agents, shell


def _signature_rejections(steps: list[Step]) -> list[Step]:
    expect_frame(16, "G", {"type": "error", "code": "invalid_signature"})(steps)
    return replace(steps, {16: [to("G", {"type": "agent_registered"})]})


def _squatting(steps: list[Step]) -> list[Step]:
    return [
        *steps[:5],
        error("X", "invalid_device_id"),
        *steps[6:11],
        to("V", {"type": "agent_registered"}),
        *steps[12:15],
        to("V", PEER_FOUND),
        to("C", PEER_FOUND),
        silent("X"),
    ]


def _shell_rate_limit_success(steps: list[Step]) -> list[Step]:
    # C1 holds the agent; C2-C4 get the uniform reply (busy agent counts as a miss); C5, C6 limited.
    uniform = {14: [], 19: [], 24: [], 29: [], 30: [error("C5", "rate_limited")]}
    return [*replace(steps, uniform), silent("G")]


def _steal(steps: list[Step]) -> list[Step]:
    return [
        *steps[:14],
        steps[15],
        steps[16],
        to("C1", {"type": "data", "payload": "agent-output"}),
        silent("C2"),
        *steps[19:21],
        *health(1, 1),
    ]


# ---------------------------------------------------------------------------- W10 volume


def _volume_cap(steps: list[Step]) -> list[Step]:
    frame = json.dumps({"type": "data", "payload": "A" * 60_000}, separators=(",", ":"))

    async def flood(replay: Replay) -> None:
        sender, receiver = replay.clients["A"], replay.clients["B"]
        sent = 0
        while sent < 100:
            await sender.send(frame)
            sent += 1
            if sent * len(frame) > 256 * 1024:
                break
        assert await sender.recv_json() == {"type": "error", "code": "session_data_limit"}
        assert (await sender.closed())[0] == 1000
        for _ in range(sent - 1):
            assert await receiver.recv() == frame
        assert await receiver.recv_json() == {"type": "error", "code": "peer_disconnected"}
        assert (await receiver.closed())[0] == 1000
        replay.closing.update({"A", "B"})

    return [*steps[:9], custom(flood), *health(0)]


# ---------------------------------------------------------------------------- timers (W9 etc.)


def _session_expiry(steps: list[Step]) -> list[Step]:
    async def expire(replay: Replay) -> None:
        for name in ("A", "B"):
            assert await replay.clients[name].recv_json(timeout=RECV_DEADLINE) == {
                "type": "error",
                "code": "session_expired",
            }
            assert await replay.clients[name].closed() == (1000, "")
            replay.closing.add(name)

    return [*steps[:4], *steps[6:11], custom(expire), *health(0)]


def _lazy_expiry(steps: list[Step]) -> list[Step]:
    # The session's lifetime starts after ``mark``, so waiting TTL past it is past expiry.
    mark, lifetime_passes = time_passes(PAIRING_TTL + 0.2)

    async def after_expiry(replay: Replay) -> None:
        await replay.clients["B"].send({"type": "data", "payload": "late"})
        for name in ("B", "A"):
            assert await replay.clients[name].recv_json() == {
                "type": "error",
                "code": "session_expired",
            }
            assert (await replay.clients[name].closed())[0] == 1000
            replay.closing.add(name)

    return [mark, *steps[1:10], lifetime_passes, custom(after_expiry), *health(0)]


def _window_reset(steps: list[Step]) -> list[Step]:
    async def window(replay: Replay) -> None:
        client = replay.clients["A"]
        for otc in ("900001", "900002", "900003", "900004", "900005"):
            assert await client.request({"type": "connect", "otc": otc}) == {
                "type": "error",
                "code": "otc_not_found",
            }
        limited = {"type": "error", "code": "rate_limited"}
        assert await client.request({"type": "connect", "otc": "900006"}) == limited

        async def fresh_quota() -> bool:
            reply = await client.request({"type": "connect", "otc": "900007"})
            return bool(reply == {"type": "error", "code": "otc_not_found"})

        await wait_for(fresh_quota, timeout=RECV_DEADLINE, interval=0.1)

    return [*steps[:2], custom(window)]


def _heartbeat(steps: list[Step]) -> list[Step]:
    async def agents_dropped(replay: Replay) -> None:
        await wait_for(lambda: replay.relay.health()["agents"] == 0)

    return [*steps[:8], custom(agents_dropped), *steps[11:]]


def _idle(steps: list[Step]) -> list[Step]:
    async def idle(replay: Replay) -> None:
        answering = await open_client(replay.relay)
        silent_peer = socket.create_connection(("127.0.0.1", replay.relay.port), timeout=5)
        try:
            silent_peer.sendall(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert silent_peer.recv(4096).startswith(b"HTTP/1.1 101")
            # The peer never answers the relay's pings, so the relay drops it.
            # websockets first waits close_timeout for a close frame that never comes.
            await wait_for(
                lambda: replay.relay.metrics()["authmesh_relay_connections"] == 1, timeout=10
            )
            await answering.sync()
        finally:
            silent_peer.close()
            await answering.close()

    return [custom(idle)]


def _watcher_ttl(steps: list[Step]) -> list[Step]:
    async def watcher_gone(replay: Replay) -> None:
        await wait_for(lambda: replay.relay.metrics()["authmesh_relay_bootstrap_watchers"] == 0)

    return [
        *steps[1:5],
        *steps[8:15],
        custom(watcher_gone),
        *steps[17:],
    ]


FAST_TIMERS = {"AMESH_SWEEP_INTERVAL": "0.05"}
PAIRING_TTL = 1.0


def _health_post_without_body(steps: list[Step]) -> list[Step]:
    assert steps[4]["method"] == "POST" and steps[4]["body"] == "x"
    return replace(steps, {4: [{**steps[4], "body": ""}]})


ADAPTED: dict[str, Adapted] = {
    "health_initial": Adapted(
        "none (websockets' HTTP parser refuses request bodies; POST without a body is answered)",
        _health_post_without_body,
    ),
    "invalid_json": Adapted("none (a 'describe' step made concrete)", _bom_ping),
    "max_payload": Adapted("none (1009 reason text is websockets')", _max_payload),
    "crash_json_null": Adapted("W1", _crash_null),
    "crash_agent_sig_non_string": Adapted("W1", _crash_sig),
    "crash_agent_pubkey_non_string": Adapted("W1", _crash_pubkey),
    "invalid_otc": Adapted("W2", _invalid_otc),
    "otc_non_string_accepted": Adapted(
        "W11",
        lambda s: [
            *s[:3],
            error("A", "invalid_otc"),
            s[4],
            error("A", "invalid_otc"),
            *s[6:10],
            *health(0),
        ],
    ),
    "otc_in_use": Adapted("W2", _otc_in_use),
    "listen_twice_same_socket": Adapted("W2", _listen_twice),
    "self_connect": Adapted("W2", _self_connect),
    "stale_otc_cross_session": Adapted("W2", _stale_otc),
    "rate_limit_shared_bucket": Adapted("W2, W6", _shared_bucket),
    "session_cap": Adapted("W2", _session_cap),
    "unbounded_forwarding": Adapted("W10", _volume_cap),
    "rate_limit_listen": Adapted("W6", _rate_limit_listen),
    "rate_limit_connect_not_found": Adapted("W6", _five_failures_per_address),
    "otc_bruteforce_across_ips": Adapted("W6", _bruteforce_within_one_network),
    "rate_limit_successful_pairings": Adapted("W6", _successful_pairings),
    "xff_ignored_without_trust_proxy": Adapted(
        "W6", _acks_instead_of_rate_limited, {"AMESH_TRUST_PROXY": "0"}
    ),
    "xff_trust_proxy": Adapted("W6", _acks_instead_of_rate_limited),
    "bootstrap_watch_rate_limit": Adapted("W6", _watch_rate_limit),
    "bootstrap_init_not_rate_limited": Adapted("W3", _init_rate_limited),
    "bootstrap_happy_path": Adapted("W4", _bootstrap_happy),
    "bootstrap_reject_forward": Adapted("W4", _reject_forward),
    "bootstrap_foreign_ack": Adapted("W3", _foreign_ack),
    "bootstrap_ack_before_init_removes_watcher": Adapted("W3", _ack_before_init),
    "bootstrap_target_disconnect_removes_watcher": Adapted("W3", _target_disconnect),
    "agent_signature_rejections": Adapted("W20", _signature_rejections),
    "agent_device_id_squatting": Adapted("W5", _squatting),
    "shell_rate_limit_success": Adapted("W6, W7", _shell_rate_limit_success),
    "shell_second_controller_steals_agent_output": Adapted("W7", _steal),
    "pairing_session_expiry_close": Adapted(
        "W9", _session_expiry, {"AMESH_PAIRING_TTL": str(PAIRING_TTL), **FAST_TIMERS}
    ),
    "pairing_expiry_lazy_removal_no_close": Adapted(
        "W9", _lazy_expiry, {"AMESH_PAIRING_TTL": str(PAIRING_TTL), "AMESH_SWEEP_INTERVAL": "600"}
    ),
    "rate_limit_window_reset": Adapted("W6", _window_reset, {"AMESH_RATE_WINDOW": "0.5"}),
    "agent_heartbeat_expiry": Adapted(
        "none (timers shortened)",
        _heartbeat,
        {"AMESH_AGENT_HEARTBEAT_TIMEOUT": "1", **FAST_TIMERS},
    ),
    "idle_timeout": Adapted(
        "none (protocol keepalive timers shortened)",
        _idle,
        {"AMESH_PING_INTERVAL": "0.2", "AMESH_PING_TIMEOUT": "0.5"},
    ),
    "bootstrap_watcher_ttl": Adapted(
        "none (timers shortened)", _watcher_ttl, {"AMESH_WATCHER_TTL": "1", **FAST_TIMERS}
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_transcript(name: str, shared_relay: RelayProcess, relay_factory: Any) -> None:
    scenario = SCENARIOS[name]
    steps: list[Step] = list(scenario["steps"])
    env = relay_env(scenario["relay_config"])
    adapted = ADAPTED.get(name)
    if adapted is not None:
        steps = adapted.transform(steps)
        env.update(adapted.env)
    if env and env != SHARED_ENV:
        await Replay(relay_factory(env), steps).run()
    else:
        index = list(SCENARIOS).index(name)
        await Replay(shared_relay, steps, client_ip=f"10.99.{index}.1").run()
        await wait_idle(shared_relay)
    record("relay-transcripts.json", "", name)


def test_every_adaptation_names_a_real_scenario() -> None:
    assert set(ADAPTED) <= set(SCENARIOS)
    for name, adapted in ADAPTED.items():
        description = SCENARIOS[name]["description"]
        if description.startswith("REFERENCE"):
            assert adapted.weakness.startswith("W"), name
