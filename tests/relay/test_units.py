"""Unit tests of the relay's pure parts: JSON wire format, client addresses, configuration,
limiters, and the reference's session-store acceptance cases (relay spec §9 items 11-31)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from typing import Any

import pytest

from authmesh.relay._clientip import client_ip, is_valid_ip, prefix_key, rate_key
from authmesh.relay._config import (
    ConfigError,
    RelayConfig,
    parse_trust_proxy,
    unknown_variable_warnings,
)
from authmesh.relay._jsonwire import JsonWireError, dumps, format_number, loads
from authmesh.relay._limits import FailureLimiter
from authmesh.relay._protocol import RelayCore, Send
from tests.support.relayproc import REPO, free_port, relay_env, start_relay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15", "15"),
        ("1.50e1", "15"),
        ("12345678901234567890", "12345678901234567000"),
        ("-0", "0"),
        ("0.1", "0.1"),
        ("1e21", "1e+21"),
        ("123456789012345678901", "123456789012345680000"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("-2.5e-10", "-2.5e-10"),
        ("1e999", "null"),
    ],
)
def test_numbers_are_written_like_javascript(text: str, expected: str) -> None:
    assert dumps(loads(text)) == expected


def test_strings_are_written_like_json_stringify() -> None:
    assert dumps("héllo ✓ \u2028") == '"héllo ✓ \u2028"'
    assert dumps(loads('"\\ud800x"')) == '"\\ud800x"'  # lone surrogate escaped, UTF-8 safe
    assert dumps({"a": [None, True, False, {"b": 1}]}) == '{"a":[null,true,false,{"b":1}]}'
    assert dumps('\x00\n"\\') == '"\\u0000\\n\\"\\\\"'


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "", "\ufeff{}", "{", "[" * 5000])
def test_json_parse_rejects_what_javascript_rejects(text: str) -> None:
    with pytest.raises(JsonWireError):
        loads(text)


def test_format_number_agrees_with_python_for_round_trips() -> None:
    for value in (3.0, 0.5, 1e20, 123.456, 5e-324, 1.7976931348623157e308):
        assert float(format_number(value)) == value


# relay spec §9 items 11-21 (with our right-most / strict-IP choices, W6)
@pytest.mark.parametrize(
    "ip", ["203.0.113.42", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::1", "fe80::1%eth0"]
)
def test_valid_ips(ip: str) -> None:
    assert is_valid_ip(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "256.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4a",
        "",
        "not-an-ip",
        "; DROP TABLE users",
        "a" * 200,
        "zz:zz",
    ],
)
def test_invalid_ips(ip: str) -> None:
    assert not is_valid_ip(ip)


def test_client_ip_selection() -> None:
    peer = "127.0.0.1"
    assert client_ip(peer, ["203.0.113.42"], 0) == peer  # trust off: XFF ignored
    assert client_ip(peer, ["203.0.113.42, 10.0.0.1"], 1) == "10.0.0.1"  # right-most (W6)
    assert client_ip(peer, [], 1) == peer
    assert client_ip(peer, ["not-an-ip, also-not-an-ip"], 1) == peer
    assert client_ip(peer, ["198.51.100.7"], 1) == "198.51.100.7"
    assert client_ip(None, [], 1) == "unknown"
    assert client_ip(peer, ["1.1.1.1, 2.2.2.2, 3.3.3.3"], 2) == "2.2.2.2"
    assert client_ip(peer, ["1.1.1.1", "2.2.2.2"], 1) == "2.2.2.2"  # several headers joined
    assert client_ip(peer, ["1.1.1.1"], 3) == "1.1.1.1"  # shorter chain: its left end


def test_address_caches_stay_bounded_under_a_flood_of_addresses() -> None:
    """Keys are cached per address; fresh addresses (an attacker's) only evict."""
    for n in range(6000):
        address = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
        assert rate_key(address) == address
        assert prefix_key(address) == f"10.{n >> 16}.{(n >> 8) & 255}.0/24"
        assert is_valid_ip(address)
    for cached in (rate_key, prefix_key, is_valid_ip):
        assert cached.cache_info().currsize <= 4096


def test_rate_key_buckets_ipv6_by_64() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2")
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert rate_key("192.0.2.1") == "192.0.2.1"


@pytest.mark.parametrize(
    ("value", "hops"),
    [("1", 1), ("true", 1), ("YES", 1), ("", 0), ("0", 0), ("false", 0), ("no", 0), ("3", 3)],
)
def test_trust_proxy_values(value: str, hops: int) -> None:
    assert parse_trust_proxy(value) == hops


@pytest.mark.parametrize("value", ["maybe", "-1", "99", "1 2", "²", "١"])
def test_trust_proxy_rejects_unclear_values(value: str) -> None:
    with pytest.raises(ConfigError, match="AMESH_TRUST_PROXY"):
        parse_trust_proxy(value)


def test_config_from_env_with_overrides() -> None:
    config = RelayConfig.from_env(
        {"PORT": "4000", "AMESH_MAX_SESSIONS": "7", "AMESH_PAIRING_TTL": "1.5"}, port=0
    )
    assert (config.port, config.max_sessions, config.pairing_ttl) == (0, 7, 1.5)
    assert RelayConfig.from_env({}).port == 3001
    with pytest.raises(ConfigError, match="AMESH_MAX_SESSIONS='zero'"):
        RelayConfig.from_env({"AMESH_MAX_SESSIONS": "zero"})
    with pytest.raises(ConfigError, match="PORT"):
        RelayConfig.from_env({"PORT": "70000"})


def run_relay_command(*args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "authmesh.relay", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=relay_env(env),
    )


def test_cli_reports_bad_settings_in_one_sentence() -> None:
    result = run_relay_command("--max-sessions", "none")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("amesh-relay: --max-sessions 'none' is invalid")
    from_env = run_relay_command(env={"AMESH_MAX_SESSIONS": "none"})
    assert from_env.stderr.startswith("amesh-relay: AMESH_MAX_SESSIONS='none' is invalid")


def test_cli_version() -> None:
    result = run_relay_command("--version")
    assert result.returncode == 0
    assert result.stdout == f"amesh-relay {version('authmesh')}\n"


def test_unreachable_redis_error_names_where_the_url_was_given() -> None:
    """With --redis-url the error used to say "fix AMESH_REDIS_URL"."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    by_flag = run_relay_command("--redis-url", url)
    assert by_flag.returncode == 2
    assert by_flag.stderr.startswith("amesh-relay: cannot reach Redis at ")
    assert by_flag.stderr.endswith("; start Redis or fix --redis-url.\n")
    by_env = run_relay_command(env={"AMESH_REDIS_URL": url})
    assert by_env.stderr.endswith("; start Redis or fix AMESH_REDIS_URL.\n")


def test_unknown_amesh_variables_get_a_one_line_warning() -> None:
    """A misspelt setting (AMESH_MAX_SESIONS) used to be ignored silently."""
    relay = start_relay({"AMESH_MAX_SESIONS": "5", "AMESH_RELAY_URL": "ws://x/ws"})
    assert relay.stop() == 0
    assert relay.stderr_text().splitlines() == [
        "amesh-relay: warning: AMESH_MAX_SESIONS is not a relay setting and is ignored; "
        "did you mean AMESH_MAX_SESSIONS?"
    ]
    assert unknown_variable_warnings({"AMESH_TOTALLY_ELSE": "1", "PATH": "/bin"}) == [
        "AMESH_TOTALLY_ELSE is not a relay setting and is ignored; see amesh-relay --help "
        "for the settings."
    ]


def test_failure_limiter_window_and_bound() -> None:
    limiter = FailureLimiter(limit=2, window=10, max_keys=3)
    limiter.fail("a", 0)
    assert not limiter.blocked("a", 1)
    limiter.fail("a", 1)
    assert limiter.blocked("a", 2)
    assert not limiter.blocked("a", 10)  # fixed window over
    for key in "bcdef":
        limiter.fail(key, 3)
    assert len(limiter) == 3  # bounded: oldest forgotten first


class _CountingWindows(dict[str, Any]):
    """The limiter's map, counting how many entries were looked at."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return super().__getitem__(key)

    def items(self) -> Any:
        self.reads += len(self)
        return super().items()

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_flood_of_fresh_keys_never_scans_the_full_map() -> None:
    """Every failure from a new key on a full map used to scan all of it for ended windows."""
    limiter = FailureLimiter(limit=2, window=60, max_keys=10_000)
    counting = limiter._windows = _CountingWindows()
    for n in range(10_000):
        limiter.fail(f"k{n}", float(n) / 1000)
    counting.reads = 0
    for n in range(1_000):
        limiter.fail(f"fresh{n}", 20.0)
    assert len(limiter) == 10_000
    assert counting.reads < 5 * 1_000  # a few entries per failure, not the whole map
    limiter.purge(62.0)  # k1000..k2000 have ended; the scan stops at the first live window
    assert len(limiter) == 10_000 - 1_001 and counting.reads < 5 * 1_000 + 2_000


def _listen(core: RelayCore, conn: int, otc: str, now: float = 0.0) -> str:
    core.open(conn, f"10.0.{conn}.1", now)
    actions = core.receive(conn, json.dumps({"type": "listen", "otc": otc}), now)
    (reply,) = [a for a in actions if isinstance(a, Send) and a.conn == conn]
    return str(json.loads(reply.text).get("code", "ack"))


def test_session_store_cap_and_collision() -> None:
    """§9 items 27-31: cap honoured, capacity distinct from collision, expired swept."""
    core = RelayCore(RelayConfig(max_sessions=5))
    assert [_listen(core, n, f"10000{n}") for n in range(5)] == ["ack"] * 5
    assert _listen(core, 5, "100009") == "relay_capacity"
    assert _listen(core, 6, "100001") == "otc_in_use"
    small = RelayCore(RelayConfig(max_sessions=2, pairing_ttl=1))
    assert _listen(small, 1, "200001") == "ack"
    assert _listen(small, 2, "200002") == "ack"
    assert _listen(small, 3, "200003", now=5) == "ack"  # the expired ones were swept
    assert small.sizes()["sessions"] == 1
    big = RelayCore(RelayConfig())
    assert all(_listen(big, n, f"{300000 + n}") == "ack" for n in range(100))


def test_pairing_v2_sessions_get_their_own_lifetime() -> None:
    """Pairing v2 waits for the operator to type the SAS: AMESH_SAS_PAIRING_TTL, not 60 s."""
    core = RelayCore(RelayConfig(pairing_ttl=60, sas_pairing_ttl=300))
    for conn, (otc, protocol) in enumerate([("400001", 1), ("400002", 2)], start=1):
        core.open(conn, f"10.1.0.{conn}", 0.0)
        message = {"type": "listen", "otc": otc, "protocol": protocol}
        core.receive(conn, json.dumps(message), 0.0)
    expired = {a.conn for a in core.tick(61.0) if isinstance(a, Send)}
    assert expired == {1}
    assert core.sizes()["sessions"] == 1
    assert {a.conn for a in core.tick(300.0) if isinstance(a, Send)} == {2}
    assert core.sizes()["sessions"] == 0
