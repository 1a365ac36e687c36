"""Hypothesis state machine over the transport-free protocol core (``RelayCore``).

Random sequences of connects, disconnects, well-formed and malformed messages and clock
ticks; after every step the core's maps must be mutually consistent, every action must target
an open connection with one compact JSON object, and no handler may have failed.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.relay._config import RelayConfig
from authmesh.relay._protocol import Close, RelayCore, Send

KEYS = [PrivateKey.generate() for _ in range(2)]
OTCS = ["111111", "222222", "333333"]
JTIS = ["bt_a", "bt_b"]
CONFIG = RelayConfig(
    max_connections=6,
    max_connections_per_ip=4,
    max_sessions=3,
    pairing_ttl=5.0,
    sas_pairing_ttl=6.0,
    shell_idle_timeout=5.0,
    pairing_session_bytes=300,
    shell_session_bytes=600,
    rate_window=10.0,
    otc_failure_budget=3,
    global_failure_budget=8,
    watcher_ttl=7.0,
    max_watches_per_socket=2,
    jti_ttl=20.0,
    max_consumed_jtis=3,
    agent_heartbeat_timeout=6.0,
    idle_timeout=8.0,
    max_tracked_ips=3,
)

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "x", "am_x", "AAAA"])
)
otc = st.one_of(st.sampled_from(OTCS), scalar)
jti = st.one_of(st.sampled_from(JTIS), scalar, st.just("j" * 129))
key_text = st.one_of(st.sampled_from([k.public_key_b64 for k in KEYS]), scalar)
device = st.one_of(st.sampled_from([k.device_id for k in KEYS]), scalar)
protocol = st.one_of(st.just(1), st.just(2), scalar)


def message(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    optional = {name: strategy for name, strategy in fields.items()}
    return st.fixed_dictionaries({"type": st.just(kind)}, optional=optional)


messages = st.one_of(
    message("listen", otc=otc, protocol=protocol),
    message("connect", otc=otc, protocol=protocol),
    message("data", payload=st.one_of(scalar, st.text(max_size=200))),
    message("done"),
    message("bootstrap_watch", jti=jti),
    message("bootstrap_init", jti=jti, token=scalar, targetPubKey=scalar, targetSig=scalar),
    message("bootstrap_ack", jti=jti, publicKey=scalar, controllerSig=scalar),
    message("bootstrap_reject", jti=jti, error=scalar),
    message("agent", deviceId=device, publicKey=key_text),
    message("agent_challenge_response", sig=scalar),
    message("shell", targetDeviceId=device, targetPublicKey=key_text),
    message("ping"),
    message("unknown"),
)
raw_frames = st.one_of(
    st.sampled_from(["null", "[]", "{", '"x"', "1e999", "NaN", "\ufeff{}"]),
    st.text(max_size=30),
    st.binary(max_size=30),
)


class _FailureLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RelayCoreMachine(RuleBasedStateMachine):
    conns = Bundle("conns")

    def __init__(self) -> None:
        super().__init__()
        counter = itertools.count()
        # Deterministic challenges keep Hypothesis' replays identical.
        self.core = RelayCore(CONFIG, new_id=lambda: str(uuid.UUID(int=next(counter), version=4)))
        self.now = 0.0
        self.next_id = 1
        self.open: set[int] = set()
        self.challenges: dict[int, str] = {}
        self.failures = _FailureLog()
        logging.getLogger("authmesh.relay").addHandler(self.failures)

    def teardown(self) -> None:
        logging.getLogger("authmesh.relay").removeHandler(self.failures)

    def apply(self, actions: list[Send | Close]) -> None:
        for action in actions:
            assert action.conn in self.open, action
            if isinstance(action, Send):
                frame = json.loads(action.text)
                assert isinstance(frame, dict) and isinstance(frame.get("type"), str)
                assert action.text == json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
                if frame["type"] == "agent_challenge":
                    self.challenges[action.conn] = frame["challenge"]
            else:
                self.open.discard(action.conn)
                self.apply(self.core.close(action.conn, self.now))

    @initialize()
    def start(self) -> None:
        pass

    @rule(target=conns, ip=st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"]))
    def connect(self, ip: str) -> int:
        conn = self.next_id
        self.next_id += 1
        self.open.add(conn)
        self.apply(self.core.open(conn, ip, self.now))
        return conn

    @rule(conn=consumes(conns))
    def disconnect(self, conn: int) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self.apply(self.core.close(conn, self.now))

    @rule(conn=conns, frame=messages)
    def send(self, conn: int, frame: dict[str, Any]) -> None:
        self.deliver(conn, frame)

    def deliver(self, conn: int, frame: dict[str, Any]) -> None:
        if conn in self.open:
            self.apply(self.core.receive(conn, json.dumps(frame), self.now))

    @rule(conn=conns, code=st.sampled_from(OTCS), version=st.sampled_from([1, 2]))
    def listen(self, conn: int, code: str, version: int) -> None:
        self.deliver(conn, {"type": "listen", "otc": code, "protocol": version})

    @rule(conn=conns, code=st.sampled_from(OTCS), version=st.sampled_from([1, 2]))
    def connect_code(self, conn: int, code: str, version: int) -> None:
        self.deliver(conn, {"type": "connect", "otc": code, "protocol": version})

    @rule(conn=conns, size=st.integers(0, 250))
    def data(self, conn: int, size: int) -> None:
        self.deliver(conn, {"type": "data", "payload": "x" * size})

    @rule(conn=conns)
    def done(self, conn: int) -> None:
        self.deliver(conn, {"type": "done"})

    @rule(conn=conns, name=st.sampled_from(JTIS))
    def watch(self, conn: int, name: str) -> None:
        self.deliver(conn, {"type": "bootstrap_watch", "jti": name})

    @rule(conn=conns, name=st.sampled_from(JTIS))
    def init(self, conn: int, name: str) -> None:
        self.deliver(conn, {"type": "bootstrap_init", "jti": name, "token": "t"})

    @rule(conn=conns, name=st.sampled_from(JTIS), kind=st.sampled_from(["ack", "reject"]))
    def answer(self, conn: int, name: str, kind: str) -> None:
        self.deliver(conn, {"type": f"bootstrap_{kind}", "jti": name, "controllerSig": "s"})

    @rule(conn=conns, key=st.sampled_from(KEYS))
    def register(self, conn: int, key: PrivateKey) -> None:
        self.deliver(
            conn, {"type": "agent", "deviceId": key.device_id, "publicKey": key.public_key_b64}
        )

    @rule(conn=conns, key=st.sampled_from(KEYS))
    def shell(self, conn: int, key: PrivateKey) -> None:
        frame = {
            "type": "shell",
            "targetDeviceId": key.device_id,
            "targetPublicKey": key.public_key_b64,
        }
        self.deliver(conn, frame)

    @rule(conn=conns)
    def ping(self, conn: int) -> None:
        self.deliver(conn, {"type": "ping"})

    @rule(conn=conns, frame=raw_frames)
    def send_raw(self, conn: int, frame: str | bytes) -> None:
        if conn in self.open:
            self.apply(self.core.receive(conn, frame, self.now))

    @rule(conn=conns, key=st.sampled_from(KEYS))
    def answer_challenge(self, conn: int, key: PrivateKey) -> None:
        challenge = self.challenges.pop(conn, None)
        if conn in self.open and challenge is not None:
            signature = b64url_encode(key.sign(challenge.encode()))
            frame = {"type": "agent_challenge_response", "sig": signature}
            self.apply(self.core.receive(conn, json.dumps(frame), self.now))

    @rule(seconds=st.floats(0.1, 4.0))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.apply(self.core.tick(self.now))

    @invariant()
    def consistent(self) -> None:
        core: Any = self.core
        assert not self.failures.records, "a message handler raised"
        assert set(core._conns) <= self.open
        assert sum(core._per_ip.values()) == len(core._conns)
        assert all(count > 0 for count in core._per_ip.values())
        assert len(core._conns) <= CONFIG.max_connections
        assert len(core._sessions) <= CONFIG.max_sessions
        for key, session in core._sessions.items():
            assert session.key == key
            for conn in (session.target, session.controller):
                if conn is not None:
                    assert conn.session is session and not conn.closing
                    assert core._conns.get(conn.id) is conn
            assert session.target is not session.controller
        for conn in core._conns.values():
            if conn.session is not None:
                assert core._sessions.get(conn.session.key) is conn.session
            watching = conn.watching or set()
            for watched in watching:
                assert core._watchers[watched].conn is conn
            assert len(watching) <= CONFIG.max_watches_per_socket
        for watched, watch in core._watchers.items():
            assert watched in (watch.conn.watching or ())
            assert core._conns.get(watch.conn.id) is watch.conn
        for device, agent in core._agents.items():
            assert agent.conn.agent_id == device and core._conns.get(agent.conn.id) is agent.conn
        for jti_, target in core._targets.items():
            assert target.bootstrap_jti == jti_ and core._conns.get(target.id) is target
        assert len(core._consumed) <= CONFIG.max_consumed_jtis
        for limiter in core._limiters.values():
            assert len(limiter) <= CONFIG.max_tracked_ips
        json.loads(core.health())


RelayCoreMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRelayCore = RelayCoreMachine.TestCase
