"""The relay core's side of clustering, without Redis: what it journals for other instances,
the shared facts it adopts, and the settings that switch clustering on.

The cluster itself (real redis-server, several relay processes, nginx) is tested in
``tests/cluster``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from authmesh.relay import create_relay_server
from authmesh.relay._cluster import RedisCluster
from authmesh.relay._config import ClusterUnavailable, ConfigError, RelayConfig, redacted_url
from authmesh.relay._envelopes import Frame
from authmesh.relay._limits import FailureLimiter
from authmesh.relay._protocol import RelayCore, Send, SharedFact, read


def _frames(actions: list[object], conn: int) -> list[dict[str, object]]:
    return [json.loads(a.text) for a in actions if isinstance(a, Send) and a.conn == conn]


def _send(core: RelayCore, conn: int, **message: object) -> list[dict[str, object]]:
    return _frames(core.receive(conn, json.dumps(message), 0.0), conn)


def test_redis_url_setting() -> None:
    config = RelayConfig.from_env({"AMESH_REDIS_URL": "redis://:pw@127.0.0.1:6379/0"})
    assert config.redis_url == "redis://:pw@127.0.0.1:6379/0"
    assert RelayConfig.from_env({}).redis_url == ""  # embedded state, no Redis
    assert RelayConfig.from_env({"AMESH_INSTANCE_TTL": "1.5"}).instance_ttl == 1.5
    for wrong in ("http://127.0.0.1:6379", "redis://127.0.0.1:port/0", "redis:///0", "unix://"):
        with pytest.raises(ConfigError, match="AMESH_REDIS_URL"):
            RelayConfig.from_env({"AMESH_REDIS_URL": wrong})
    with pytest.raises(ConfigError) as refused:
        RelayConfig.from_env({"AMESH_REDIS_URL": "redis://:s3cret@h:99999/0"})
    assert "s3cret" not in str(refused.value) and ":***@h" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:s3cret@h:6380", "rediss://user:***@h:6380"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redis_passwords_are_never_shown(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_limiter_adopts_shared_counts_within_its_bound() -> None:
    limiter = FailureLimiter(limit=3, window=60, max_keys=2)
    limiter.adopt("a", 3, resets_at=30)
    assert limiter.blocked("a", 10)
    assert not limiter.blocked("a", 30)  # the shared window's end, not a local one
    limiter.adopt("a", 0, resets_at=0)  # the shared counter expired
    assert not limiter.blocked("a", 10) and len(limiter) == 0
    for key in "bcd":
        limiter.adopt(key, 1, resets_at=30)
    assert len(limiter) == 2


def test_core_journals_what_other_instances_must_learn() -> None:
    core = RelayCore(RelayConfig(), new_id=lambda: "challenge")
    core.journal = []
    core.open(1, "10.0.0.1", 0.0)
    assert _send(core, 1, type="connect", otc="123456") == [
        {"type": "error", "code": "otc_not_found"}
    ]
    assert core.journal == [
        ("fail", "pairing", "10.0.0.1"),
        ("fail", "pairing_prefix", "10.0.0.0/24"),
        ("fail", "global", ""),
    ]
    core.open(2, "10.0.0.2", 0.0)
    _send(core, 2, type="bootstrap_watch", jti="j1")
    core.open(3, "10.0.0.3", 0.0)
    core.journal = []
    frames = _send(core, 3, type="bootstrap_init", jti="j1", token="t")
    assert frames == [] and core.journal == [("jti", "j1", "")]
    assert core.routing_names() == {"otc": [], "watch": ["j1"], "agent": [], "pending": []}


def test_core_refuses_a_token_id_consumed_elsewhere() -> None:
    """A jti another instance consumed is refused here too (relay spec §8, replay)."""
    core = RelayCore(RelayConfig())
    core.open(1, "10.0.0.1", 0.0)
    _send(core, 1, type="bootstrap_watch", jti="used")
    core.open(2, "10.0.0.2", 0.0)
    core.adopt_consumed("used", 0.0)
    assert _send(core, 2, type="bootstrap_init", jti="used", token="t") == [
        {"type": "bootstrap_reject", "error": "token_already_used"}
    ]


def test_global_budget_used_up_elsewhere_slows_down_failed_prefixes_here() -> None:
    """W6's global budget counts failed connects on every instance, not just this one; used
    up, it refuses addresses whose prefix failed (shared counts) and burns nothing."""
    core = RelayCore(RelayConfig(global_failure_budget=10))
    core.open(1, "10.0.0.1", 0.0)
    _send(core, 1, type="listen", otc="123456")
    core.adopt_global_failures(10, resets_at=60.0)
    core.open(2, "10.0.0.2", 0.0)
    assert core.shared_reads(2, read('{"type":"connect","otc":"654321"}')) == [
        SharedFact("fail", "pairing", "10.0.0.2"),
        SharedFact("fail", "pairing_prefix", "10.0.0.0/24"),
        SharedFact("fail", "global"),
    ]
    core.adopt_failures("pairing_prefix", "10.0.0.0/24", 1, resets_at=60.0)
    assert _send(core, 2, type="connect", otc="654321") == [
        {"type": "error", "code": "rate_limited"}
    ]
    core.open(3, "192.0.2.1", 1.0)
    assert _frames(core.receive(3, '{"type":"connect","otc":"123456"}', 1.0), 3) == [
        {"type": "peer_found"}
    ]


def test_only_sockets_without_state_can_move_to_another_instance() -> None:
    core = RelayCore(RelayConfig())
    core.open(1, "10.0.0.1", 0.0)
    assert core.is_movable(1)
    _send(core, 1, type="listen", otc="123456")
    assert not core.is_movable(1)
    assert not core.is_movable(99)
    assert core.routing_names()["otc"] == ["123456"]


def test_degraded_health_keeps_the_reference_fields() -> None:
    core = RelayCore(RelayConfig())
    assert json.loads(core.health()) == {"status": "ok", "sessions": 0, "agents": 0}
    assert json.loads(core.health("redis_unavailable")) == {
        "status": "degraded",
        "reason": "redis_unavailable",
        "sessions": 0,
        "agents": 0,
    }


async def test_a_bad_redis_url_given_in_code_is_one_sentence() -> None:
    relay = create_relay_server(port=0, env={}, redis_url="redis://:s3cret@h:x/0")
    with pytest.raises(ClusterUnavailable, match="is not a Redis URL") as refused:
        await relay.start()
    assert "s3cret" not in str(refused.value)


async def test_an_overflowing_outbox_drops_an_instance_once() -> None:
    """Each overflowing envelope used to schedule its own drop: a log line and a scan of
    every crossing socket per lost frame."""
    config = RelayConfig(redis_url="redis://127.0.0.1:1/0")
    cluster = RedisCluster(config, RelayCore(config), lambda actions: None, lambda: 0)
    lost: list[str] = []
    cluster._instance_gone = lost.append  # type: ignore[method-assign]
    while not cluster._outbox.full():
        cluster._outbox.put_nowait(("elsewhere", "x"))
    for socket in range(1_000):
        cluster._post("slow", Frame(socket, "{}"))
    await asyncio.sleep(0)  # the scheduled drop runs
    assert lost == ["slow"]
    cluster._post("slow", Frame(0, "{}"))  # still overflowing later: dropped again
    await asyncio.sleep(0)
    assert lost == ["slow", "slow"]
    await cluster._redis.aclose()
