"""Hostile relay clients (H1-H5 of docs/security.md's register) on the core.

Each test replays one attack against :class:`RelayCore` with a fake clock: many source
addresses exhausting the global failure budget, ``listen`` enumeration, shell-request floods,
a NAT neighbour locking an address, a protocol mismatch. ``test_attacks.py`` repeats each
attack once against a real relay process.
"""

from __future__ import annotations

from typing import Any

from authmesh.core._keys import PrivateKey
from authmesh.relay._config import RelayConfig
from tests.relay.fakerelay import ACK, PEER_FOUND, FakeRelay, error

WAITING_CODE = "482916"


def spread_addresses(count: int) -> list[str]:
    """``count`` addresses, each in its own /24 (an attacker with many networks)."""
    return [f"10.{i // 256}.{i % 256}.7" for i in range(count)]


def fail_connects(relay: FakeRelay, addresses: list[str], per_address: int) -> list[Any]:
    """Every address sends ``per_address`` connects to codes nobody holds; the answers."""
    answers = []
    for ip in addresses:
        conn = relay.open(ip)
        for attempt in range(per_address):
            answers += relay.send(conn, type="connect", otc=f"{attempt:06d}")
    return answers


# ------------------------------------------------------------------ H1 global budget


def test_340_addresses_failing_cannot_lock_pairing_for_everyone() -> None:
    """340 addresses x 3 failed connects used to burn every waiting code and refuse everyone
    (``rate_limited``) for the rest of the window."""
    relay = FakeRelay()
    target = relay.open("192.0.2.10")
    assert relay.send(target, type="listen", otc=WAITING_CODE) == [ACK]
    answers = fail_connects(relay, spread_addresses(340), per_address=3)
    guesses = answers.count(error("otc_not_found"))
    assert 1000 <= guesses < 1020  # then only addresses that had not failed got a guess
    assert answers.count(error("rate_limited")) == 1020 - guesses
    assert relay.frames[target] == [ACK] and target not in relay.closed  # not burned
    # The waiting target's real controller still pairs.
    controller = relay.open("198.51.100.20")
    assert relay.send(controller, type="connect", otc=WAITING_CODE) == [PEER_FOUND]
    assert relay.frames[target][-1] == PEER_FOUND
    # A brand-new pairing from addresses that have not failed works.
    new_target, new_controller = relay.open("192.0.2.30"), relay.open("198.51.100.30")
    assert relay.send(new_target, type="listen", otc="111222") == [ACK]
    assert relay.send(new_controller, type="connect", otc="111222") == [PEER_FOUND]


def test_while_the_budget_is_used_up_each_failed_network_is_slowed_to_nothing() -> None:
    relay = FakeRelay(RelayConfig(global_failure_budget=100))
    fail_connects(relay, spread_addresses(50), per_address=2)
    # Budget used up: an address that failed (or whose /24 failed) gets no further guess...
    again = relay.open("10.0.3.7")
    neighbour = relay.open("10.0.3.99")
    assert relay.send(again, type="connect", otc="999999") == [error("rate_limited")]
    assert relay.send(neighbour, type="connect", otc="999999") == [error("rate_limited")]
    # ...a fresh network gets one, and the next window starts over.
    fresh = relay.open("203.0.113.5")
    assert relay.send(fresh, type="connect", otc="999999") == [error("otc_not_found")]
    assert relay.send(fresh, type="connect", otc="999998") == [error("rate_limited")]
    relay.tick(61.0)
    assert relay.send(again, type="connect", otc="999999") == [error("otc_not_found")]


def test_failures_count_per_ipv4_24_and_ipv6_48() -> None:
    """One attacker owning a whole network cannot get a full budget per address."""
    relay = FakeRelay()  # 5 per address, 4 x 5 = 20 per prefix
    answers = fail_connects(relay, [f"203.0.113.{i}" for i in range(1, 31)], per_address=1)
    assert answers.count(error("otc_not_found")) == 20
    assert answers[20:] == [error("rate_limited")] * 10
    elsewhere = relay.open("203.0.114.1")
    assert relay.send(elsewhere, type="connect", otc="000000") == [error("otc_not_found")]
    # IPv6: one /64 is one address; 20 of them in one /48 use up the prefix.
    addresses = [f"2001:db8:7:{i:x}::1" for i in range(30)]
    answers = fail_connects(relay, addresses, per_address=1)
    assert answers.count(error("otc_not_found")) == 20
    other_site = relay.open("2001:db8:8::1")
    assert relay.send(other_site, type="connect", otc="000000") == [error("otc_not_found")]


# ------------------------------------------------------------------ H4, H5


def test_default_pairing_failure_limit_is_5_per_address() -> None:
    relay = FakeRelay()
    answers = fail_connects(relay, ["192.0.2.50"], per_address=7)
    assert answers == [error("otc_not_found")] * 5 + [error("rate_limited")] * 2


def test_a_locked_address_cannot_stop_a_pairing_in_progress() -> None:
    """A NAT neighbour failing connects from the target's own address used to block every
    ``listen`` behind that address, and probes on the live code counted against it."""
    relay = FakeRelay()
    nat = "192.0.2.77"
    target = relay.open(nat)
    assert relay.send(target, type="listen", otc=WAITING_CODE) == [ACK]
    fail_connects(relay, [nat], per_address=6)
    locked = relay.open(nat)
    assert relay.send(locked, type="connect", otc="000001") == [error("rate_limited")]
    # The pairing in progress is untouched and completes.
    controller = relay.open("198.51.100.77")
    assert relay.send(controller, type="connect", otc=WAITING_CODE) == [PEER_FOUND]
    assert relay.send(controller, type="data", payload="hello") == []
    assert relay.frames[target][-2:] == [PEER_FOUND, {"type": "data", "payload": "hello"}]
    # Someone else behind the same NAT can still open a code.
    colleague = relay.open(nat)
    assert relay.send(colleague, type="listen", otc="135790") == [ACK]


def test_protocol_mismatch_is_told_to_both_sides() -> None:
    """The waiting side used to hear nothing and wait until its code expired."""
    relay = FakeRelay()
    target, controller = relay.open("192.0.2.1"), relay.open("198.51.100.1")
    assert relay.send(target, type="listen", otc=WAITING_CODE, protocol=2) == [ACK]
    answer = relay.send(controller, type="connect", otc=WAITING_CODE)
    assert answer == [error("protocol_mismatch", protocol=2)]
    assert relay.frames[target][-1] == error("protocol_mismatch", protocol=1)
    assert target in relay.closed and relay.core.sizes()["sessions"] == 0


# ------------------------------------------------------------------ H2 listen probes


def test_one_socket_cannot_enumerate_codes_with_listen_and_done() -> None:
    """Misses used to cost nothing: ~29,000 codes/s from one socket."""
    relay = FakeRelay()
    prober = relay.open("192.0.2.99")
    answers = []
    for code in range(30):
        answers += relay.send(prober, type="listen", otc=f"{code:06d}")
        relay.send(prober, type="done")
    assert answers == [ACK] * 10 + [error("rate_limited")] * 20
    relay.tick(61.0)
    assert relay.send(prober, type="listen", otc="000031") == [ACK]


def test_listen_probes_are_limited_per_prefix_too() -> None:
    relay = FakeRelay()  # 10 per address, 40 per /24
    answers = []
    for host in range(1, 51):
        answers += relay.send(relay.open(f"198.51.100.{host}"), type="listen", otc=f"{host:06d}")
    assert answers == [ACK] * 40 + [error("rate_limited")] * 10


def test_a_hit_found_by_listen_cannot_be_used_to_connect_first() -> None:
    """A probe that finds a live code counts as a pairing failure too."""
    relay = FakeRelay(RelayConfig(pairing_failure_limit=1))
    target = relay.open("192.0.2.1")
    relay.send(target, type="listen", otc=WAITING_CODE)
    prober = relay.open("203.0.113.9")
    assert relay.send(prober, type="listen", otc=WAITING_CODE) == [error("otc_in_use")]
    assert relay.send(prober, type="connect", otc=WAITING_CODE) == [error("rate_limited")]


# ------------------------------------------------------------------ H3 shell requests


def register_agent(relay: FakeRelay, key: PrivateKey) -> int:
    agent, answer = relay.register_agent(key, protocol=2)
    assert answer == {"type": "agent_registered"}
    return agent


def test_shell_requests_are_limited_per_requester_address() -> None:
    """Anyone knowing an agent's id and public key could make the relay forward an endless
    stream of unauthenticated ``shell_request``s to it."""
    relay = FakeRelay()  # 20 per address
    key = PrivateKey.generate()
    agent = register_agent(relay, key)
    request = {"targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    answers = []
    for _ in range(60):
        answers += relay.send(relay.open("203.0.113.66"), type="shell", **request)
        relay.tick(1.0)  # pending requests expire, so the per-agent cap alone does not help
    forwarded = [f for f in relay.frames[agent] if f["type"] == "shell_request"]
    assert len(forwarded) == 20
    assert answers == [PEER_FOUND] * 20 + [error("rate_limited")] * 40
    # Another requester is not affected.
    assert relay.send(relay.open("198.51.100.1"), type="shell", **request) == [PEER_FOUND]


def test_shell_requests_are_limited_per_requester_prefix() -> None:
    # 4 x 20 = 80 per /24; short-lived pending requests keep the per-agent cap out of it.
    relay = FakeRelay(RelayConfig(handshake_timeout=5.0))
    key = PrivateKey.generate()
    agent = register_agent(relay, key)
    request = {"targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}
    for host in range(1, 101):
        relay.send(relay.open(f"203.0.113.{host}"), type="shell", **request)
        relay.tick(0.5)
    forwarded = [f for f in relay.frames[agent] if f["type"] == "shell_request"]
    assert len(forwarded) == 80
