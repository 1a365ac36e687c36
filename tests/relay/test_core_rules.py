"""The relay's rules (weaknesses of ``spec/relay.md`` §8/§11 and the pairing-v2 contract)
on the core with a fake clock: no process, no socket, no waiting.

``test_weaknesses.py`` keeps what needs a real process: frames that must not crash it, client
addresses from ``X-Forwarded-For``, connection caps, shutdown, timeouts of the transport,
``/metrics``, ``/health`` and the logs.
"""

from __future__ import annotations

from typing import Any

import pytest

from authmesh.core._b64 import b64encode, b64url_encode
from authmesh.core._keys import CURVE_ORDER, PrivateKey, load_public_key
from authmesh.relay._config import RelayConfig
from tests.relay.fakerelay import ACK, PEER_FOUND, FakeRelay, error

REGISTERED = {"type": "agent_registered"}


def shell_request(key: PrivateKey) -> dict[str, str]:
    return {"type": "shell", "targetDeviceId": key.device_id, "targetPublicKey": key.public_key_b64}


def watching(jti: str) -> dict[str, str]:
    return {"type": "bootstrap_watching", "jti": jti}


def watched(relay: FakeRelay, jti: str) -> tuple[int, int]:
    """A socket watching ``jti`` and another socket (the target, later)."""
    watcher, target = relay.open(), relay.open()
    assert relay.send(watcher, type="bootstrap_watch", jti=jti) == [watching(jti)]
    return watcher, target


# ---------------------------------------------------------------------------- W1


def test_w1_null_is_unknown_type() -> None:
    relay = FakeRelay()
    assert relay.send_raw(relay.open(), "null") == [error("unknown_type")]


# ---------------------------------------------------------------------------- W2, W16


def test_w2_bindings_are_cleared_when_a_session_ends() -> None:
    """W2/W16: after done, the old peers are unbound; a new session on the code is safe."""
    relay = FakeRelay()
    target, controller = relay.paired("482916")
    relay.send(target, type="done")
    assert relay.frames[controller][-1] == {"type": "done"}
    newcomer = relay.open()
    assert relay.send(newcomer, type="listen", otc="482916") == [ACK]
    relay.send(controller, type="data", payload="injected")
    relay.close(controller)
    assert relay.frames[newcomer] == [ACK]  # nothing injected, no peer_disconnected
    assert relay.send(target, type="listen", otc="482917") == [ACK]


def test_w2_a_socket_in_a_session_cannot_listen_connect_or_shell() -> None:
    relay = FakeRelay()
    target, controller = relay.paired("482918")
    for conn in (target, controller):
        for message in (
            {"type": "listen", "otc": "482919"},
            {"type": "connect", "otc": "482918"},
            {"type": "shell", "targetDeviceId": "am_x", "targetPublicKey": "AAAA"},
        ):
            assert relay.send(conn, **message) == [error("already_in_session")]
    relay.send(target, type="data", payload="still paired")
    assert relay.frames[controller][-1] == {"type": "data", "payload": "still paired"}


def test_w2_self_connect_is_refused() -> None:
    relay = FakeRelay()
    target = relay.open()
    assert relay.send(target, type="listen", otc="482920") == [ACK]
    assert relay.send(target, type="connect", otc="482920") == [error("already_in_session")]


def test_w2_peer_disconnect_frees_the_remaining_socket() -> None:
    relay = FakeRelay()
    target, controller = relay.paired("482921")
    relay.close(controller)
    assert relay.frames[target][-1] == error("peer_disconnected")
    assert relay.send(target, type="listen", otc="482922") == [ACK]


# ---------------------------------------------------------------------------- W3, W4


def test_w3_only_the_watcher_answers_and_the_watch_survives() -> None:
    relay = FakeRelay()
    jti = "bt_w3_foreign"
    watcher, target = watched(relay, jti)
    stranger = relay.open()
    relay.send(target, type="bootstrap_init", jti=jti, token="t", targetPubKey="k")
    assert relay.frames[watcher][-1]["type"] == "bootstrap_init"
    for kind in ("bootstrap_ack", "bootstrap_reject"):
        answer = relay.send(stranger, type=kind, jti=jti, publicKey="x")
        assert answer == [error("not_watcher")]
    assert relay.frames[target] == []  # nothing forged reached the target
    relay.send(watcher, type="bootstrap_ack", jti=jti, publicKey="P", controllerSig="S")
    ack = {"type": "bootstrap_ack", "jti": jti, "controllerPubKey": "P", "controllerSig": "S"}
    assert relay.frames[target] == [ack]


def test_w3_bootstrap_init_is_rate_limited_with_a_bootstrap_reject() -> None:
    """W3: failures only, answered in the SDK's vocabulary (never an error frame)."""
    relay = FakeRelay()
    target = relay.open()
    replies = [relay.send(target, type="bootstrap_init", jti=f"bt_guess_{n}") for n in range(12)]
    assert replies[:10] == [[{"type": "bootstrap_reject", "error": "no_watcher"}]] * 10
    assert replies[10:] == [[{"type": "bootstrap_reject", "error": "rate_limited"}]] * 2


def test_w3_target_disconnect_keeps_the_watch() -> None:
    relay = FakeRelay()
    jti = "bt_w3_target_leaves"
    _, target = watched(relay, jti)
    relay.send(target, type="bootstrap_init", jti=jti)
    relay.close(target)
    other = relay.open()
    assert relay.send(other, type="bootstrap_watch", jti=jti) == [error("jti_already_watched")]


def test_w4_contract_fields_are_forwarded_and_type_checked() -> None:
    relay = FakeRelay()
    jti = "bt_w4_fields"
    watcher, target = watched(relay, jti)
    relay.send(
        target,
        type="bootstrap_init",
        jti=jti,
        token="T",
        targetPubKey="K",
        targetSig="S" * 256,
        protocol=2,
        extra="dropped",
    )
    assert relay.texts[watcher][-1] == (
        f'{{"type":"bootstrap_init","jti":"{jti}","token":"T","targetPubKey":"K",'
        f'"targetSig":"{"S" * 256}","protocol":2}}'
    )
    too_long = {"type": "bootstrap_ack", "jti": jti, "controllerSig": "S" * 257}
    assert relay.send(watcher, **too_long) == [error("invalid_message")]
    bad_error = {"type": "bootstrap_reject", "jti": jti, "error": "e" * 65}
    assert relay.send(watcher, **bad_error) == [error("invalid_message")]
    relay.send(watcher, type="bootstrap_reject", jti=jti, controllerPubKey="C", error="declined")
    reject = {"type": "bootstrap_reject", "jti": jti, "controllerPubKey": "C", "error": "declined"}
    assert relay.frames[target] == [reject]


def test_w4_malformed_init_fields_get_a_bootstrap_reject() -> None:
    relay = FakeRelay()
    jti = "bt_w4_malformed"
    watcher, target = watched(relay, jti)
    for bad in ({"targetSig": "S" * 257}, {"token": 1}, {"protocol": "2"}, {"protocol": 1.5}):
        reply = relay.send(target, type="bootstrap_init", jti=jti, **bad)
        assert reply == [{"type": "bootstrap_reject", "error": "invalid_message"}]
    assert relay.frames[watcher] == [watching(jti)]  # neither forwarded nor burned
    relay.send(target, type="bootstrap_init", jti=jti)
    assert relay.frames[watcher][-1]["type"] == "bootstrap_init"


# ---------------------------------------------------------------------------- W5, W20


def test_w5_device_id_must_derive_from_the_key() -> None:
    relay = FakeRelay()
    victim, mallory = PrivateKey.generate(), PrivateKey.generate()
    _, answer = relay.register_agent(mallory, deviceId=victim.device_id)
    assert answer == error("invalid_device_id")
    assert relay.register_agent(victim)[1] == REGISTERED


def test_w5_keys_are_compared_decoded() -> None:
    """An agent registered with its uncompressed key is found by its compressed key."""
    relay = FakeRelay()
    key = PrivateKey.generate()
    numbers = load_public_key(key.public_key).public_numbers()
    point = b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    agent, answer = relay.register_agent(key, publicKey=b64encode(point))
    assert answer == REGISTERED
    controller = relay.open()
    assert relay.send(controller, **shell_request(key)) == [PEER_FOUND]
    assert relay.frames[agent][-1] == PEER_FOUND


def test_w5_failed_registrations_are_rate_limited() -> None:
    relay = FakeRelay()
    client = relay.open()
    key = PrivateKey.generate()
    for _ in range(10):
        relay.send(client, type="agent", deviceId=key.device_id, publicKey="AAAA")
        answer = relay.send(client, type="agent_challenge_response", sig="AAAA")
        assert answer == [error("invalid_signature")]
    again = relay.send(client, type="agent", deviceId=key.device_id, publicKey=key.public_key_b64)
    assert again == [error("rate_limited")]


def test_w5_a_non_ascii_device_id_is_refused_as_such() -> None:
    """It used to raise inside the handler: a traceback in the log per message, no failure
    counted."""
    relay = FakeRelay()
    _, answer = relay.register_agent(PrivateKey.generate(), deviceId="é" * 43)
    assert answer == error("invalid_device_id")


def test_w20_high_s_challenge_signature_is_accepted() -> None:
    relay = FakeRelay()
    key = PrivateKey.generate()
    agent = relay.open()
    [challenge] = relay.send(
        agent, type="agent", deviceId=key.device_id, publicKey=key.public_key_b64
    )
    low = key.sign(challenge["challenge"].encode())
    high = low[:32] + (CURVE_ORDER - int.from_bytes(low[32:], "big")).to_bytes(32, "big")
    answer = relay.send(agent, type="agent_challenge_response", sig=b64url_encode(high))
    assert answer == [REGISTERED]


# ---------------------------------------------------------------------------- W6


def test_w6_successes_never_count_against_an_address() -> None:
    relay = FakeRelay()
    for n in range(8):
        target, controller = relay.paired(f"70000{n}")
        relay.close(target)
        relay.close(controller)


def test_w6_failures_count_and_invalid_codes_do_not() -> None:
    relay = FakeRelay()
    client = relay.open("192.0.2.1")
    for _ in range(5):
        assert relay.send(client, type="connect", otc="12345") == [error("invalid_otc")]
    for otc in ("910001", "910002", "910003", "910004", "910005"):
        assert relay.send(client, type="connect", otc=otc) == [error("otc_not_found")]
    assert relay.send(client, type="connect", otc="910006") == [error("rate_limited")]
    other = relay.open("198.51.100.1")  # another address is unaffected
    assert relay.send(other, type="connect", otc="910007") == [error("otc_not_found")]
    relay.tick(60.0)  # a new window
    assert relay.send(client, type="connect", otc="910008") == [error("otc_not_found")]


def test_w6_a_live_code_burns_after_its_failure_budget() -> None:
    relay = FakeRelay()
    target, controller = relay.paired("482930")
    for n in range(5):
        intruder = relay.open(f"203.0.113.{n}")
        answer = relay.send(intruder, type="connect", otc="482930")
        assert answer == [error("peer_already_connected")]
    for peer in (target, controller):
        assert relay.frames[peer][-1] == error("otc_burned")
        assert relay.closed[peer] == (1000, "")


def test_w6_connections_per_address_are_capped() -> None:
    relay = FakeRelay(RelayConfig(max_connections_per_ip=3))
    first = [relay.open("192.0.2.1") for _ in range(3)]
    extra = relay.open("192.0.2.1")
    assert relay.closed == {extra: (1013, "too_many_connections")}
    relay.close(first[0])
    assert relay.open("192.0.2.1") not in relay.closed


# ---------------------------------------------------------------------------- W7, W9, W10


def test_w7_shell_idle_time_is_extended_by_traffic() -> None:
    relay = FakeRelay(RelayConfig(shell_idle_timeout=10.0))
    key = PrivateKey.generate()
    agent, _ = relay.register_agent(key)
    controller = relay.open()
    assert relay.send(controller, **shell_request(key)) == [PEER_FOUND]
    for _ in range(10):  # 30 s, three idle periods, never idle
        relay.tick(3.0)
        relay.send(controller, type="data", payload="keepalive")
        assert relay.frames[agent][-1] == {"type": "data", "payload": "keepalive"}
    assert relay.core.sizes()["sessions"] == 1
    relay.tick(10.0)  # once traffic stops
    assert relay.frames[agent][-1] == error("session_expired")
    assert relay.frames[controller][-1] == error("session_expired")
    assert controller in relay.closed and agent not in relay.closed  # W7: agent stays
    assert relay.core.sizes()["agents"] == 1


def test_w9_expired_pairing_sessions_are_told_to_both_sides() -> None:
    relay = FakeRelay(RelayConfig(pairing_ttl=60.0))
    target, controller = relay.paired("482931")
    relay.tick(61.0)
    for conn in (target, controller):
        assert relay.frames[conn][-1] == error("session_expired")
        assert relay.closed[conn] == (1000, "")


def test_w10_shell_sessions_have_their_own_larger_cap() -> None:
    relay = FakeRelay(RelayConfig(pairing_session_bytes=1000, shell_session_bytes=5000))
    key = PrivateKey.generate()
    agent, _ = relay.register_agent(key)
    controller = relay.open()
    relay.send(controller, **shell_request(key))
    chunk = {"type": "data", "payload": "x" * 972}  # 1000 bytes on the wire
    for _ in range(5):
        relay.send(controller, **chunk)
        assert relay.frames[agent][-1] == chunk
    assert relay.send(controller, **chunk) == [error("session_data_limit")]
    assert relay.closed[controller] == (1000, "")
    assert relay.frames[agent][-1] == error("peer_disconnected")
    assert agent not in relay.closed and relay.core.sizes()["agents"] == 1  # W7
    # A pairing session has the smaller cap.
    _, pairing_controller = relay.paired("482932")
    relay.send(pairing_controller, **chunk)
    assert relay.send(pairing_controller, **chunk) == [error("session_data_limit")]


# ---------------------------------------------------------------------------- W11, W15, W19


@pytest.mark.parametrize("otc", [123456, ["123456"], {"otc": "123456"}, 123456.0, True])
def test_w11_only_string_codes_are_codes(otc: Any) -> None:
    relay = FakeRelay()
    assert relay.send(relay.open(), type="listen", otc=otc) == [error("invalid_otc")]


def test_w15_watches_per_socket_are_capped_and_all_removed_on_close() -> None:
    relay = FakeRelay()
    watcher, second = relay.open("192.0.2.1"), relay.open("198.51.100.1")
    for n in range(10):
        relay.send(watcher, type="bootstrap_watch", jti=f"bt_w15_{n}")
    for n in range(10, 16):
        relay.send(second, type="bootstrap_watch", jti=f"bt_w15_{n}")
    answers = [
        relay.send(watcher, type="bootstrap_watch", jti=f"bt_w15_{n}") for n in range(16, 26)
    ]
    assert answers[6:] == [[error("too_many_watches")]] * 4  # 16 per socket
    assert relay.core.sizes()["watchers"] == 22
    relay.close(watcher)
    assert relay.core.sizes()["watchers"] == 6


def test_w15_rewatch_does_not_extend_the_lifetime() -> None:
    relay = FakeRelay(RelayConfig(watcher_ttl=10.0))
    watcher = relay.open()
    for _ in range(3):
        assert relay.send(watcher, type="bootstrap_watch", jti="bt_ttl") == [watching("bt_ttl")]
        relay.tick(4.0)
    assert relay.core.sizes()["watchers"] == 0  # 12 s after the first watch


def test_w19_no_unsolicited_frames_on_a_waiting_pairing_socket() -> None:
    relay = FakeRelay()
    target = relay.open()
    relay.send(target, type="listen", otc="482941")
    for _ in range(50):
        relay.tick(1.0)
    assert relay.frames[target] == [ACK]


def test_unattached_idle_sockets_are_closed() -> None:
    relay = FakeRelay(RelayConfig(idle_timeout=120.0, pairing_ttl=300.0))
    idle, target = relay.open(), relay.open()
    relay.send(target, type="listen", otc="482961")
    relay.tick(59.0)
    assert relay.closed == {}
    relay.tick(62.0)
    assert relay.closed == {idle: (1000, "idle_timeout")}  # a socket in a session stays


# ---------------------------------------------------------------------------- contract v2, §11


def test_contract_v2_peer_found_carries_protocol_2() -> None:
    relay = FakeRelay()
    target, controller = relay.paired("482951", protocol=2)
    assert relay.texts[controller][-1] == '{"type":"peer_found","protocol":2}'
    assert relay.texts[target][-1] == '{"type":"peer_found","protocol":2}'


def test_contract_v1_peer_found_is_byte_identical() -> None:
    relay = FakeRelay()
    target, controller = relay.open(), relay.open()
    relay.send(target, type="listen", otc="482953", protocol=1)
    relay.send(controller, type="connect", otc="482953")
    assert relay.texts[controller] == ['{"type":"peer_found"}']
    assert relay.texts[target][-1] == '{"type":"peer_found"}'


@pytest.mark.parametrize("protocol", [3, 0, "2", True, None, 2.5, [2]])
def test_contract_invalid_protocol_is_invalid_message(protocol: Any) -> None:
    relay = FakeRelay()
    answer = relay.send(relay.open(), type="listen", otc="482954", protocol=protocol)
    assert answer == [error("invalid_message")]


def test_sas_confirmation_frame_after_the_exchange() -> None:
    """§11: later CLIs keep the socket open and send sas_confirmed within the session."""
    relay = FakeRelay()
    target, controller = relay.paired("482960")
    for payload in ("eph_T", "eph_C", "id_C", "id_T", "sas_confirmed"):
        relay.send(target, type="data", payload=payload)
        assert relay.frames[controller][-1] == {"type": "data", "payload": payload}
