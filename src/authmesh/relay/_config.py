"""Relay settings: one table gives every setting its env variable, CLI flag, default and parser.

Defaults keep the reference relay's observable limits (§10 item 13 of the relay spec) so
legitimate reference clients see the same behaviour; the extra knobs bound what an abuser can
consume. Time values are seconds (floats allowed, which the tests use to run quickly).
"""

from __future__ import annotations

import difflib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "SETTINGS",
    "ClusterUnavailable",
    "ConfigError",
    "RelayConfig",
    "Setting",
    "parse_trust_proxy",
    "redacted_url",
    "unknown_variable_warnings",
]


class ConfigError(ValueError):
    """A setting has a value the relay cannot use; the message says which and how to fix it."""


class ClusterUnavailable(Exception):
    """``AMESH_REDIS_URL`` is set but Redis cannot be used; the message says what to do.

    ``{setting}`` in the message stands for where the URL was given: :attr:`setting`, which
    ``amesh-relay`` sets to ``--redis-url`` when the flag was used.
    """

    def __init__(self, message: str, setting: str = "AMESH_REDIS_URL") -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting

    def __str__(self) -> str:
        return self.message.replace("{setting}", self.setting)


def parse_trust_proxy(text: str) -> int:
    """``AMESH_TRUST_PROXY``: ``1``/``true``/``yes`` trust one proxy hop, ``N`` trusts N hops.

    ``0``/``false``/``no``/empty disable it (X-Forwarded-For is then never read).
    """
    value = text.strip().lower()
    if value in ("", "0", "false", "no"):
        return 0
    if value in ("true", "yes"):
        return 1
    if value.isascii() and value.isdigit() and int(value) <= 32:
        return int(value)
    raise ConfigError(
        f"AMESH_TRUST_PROXY={text!r} is not understood; use 1/true/yes for one trusted proxy, "
        "a number of trusted hops, or leave it unset when clients connect directly."
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _redis_url(text: str) -> str:
    value = text.strip()
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket's path")
    elif parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("must be a redis://host:port, rediss://host:port or unix:// URL")
    parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    return value


def redacted_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


_MAX_WORKERS = 256


def _workers(text: str) -> int:
    value = _positive_int(text)
    if value > _MAX_WORKERS:
        raise ValueError(f"must be at most {_MAX_WORKERS}")
    return value


def _log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be debug, info, warning or error")
    return value


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError("must be text or json")
    return value


@dataclass(frozen=True)
class Setting:
    """One configurable value: dataclass field, env variable, parser and help text."""

    name: str
    env: str
    parse: Callable[[str], Any]
    help: str
    shown: Callable[[str], str] = str
    """How a raw value may appear in an error message (without secrets)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class RelayConfig:
    """Everything the relay can be told. Build with :meth:`from_env` or keyword arguments."""

    host: str = "0.0.0.0"  # noqa: S104 - a relay is meant to be reachable
    port: int = 3001
    trust_proxy: int = 0
    max_connections: int = 10_000
    max_connections_per_ip: int = 256
    max_sessions: int = 50_000
    pairing_ttl: float = 60.0
    sas_pairing_ttl: float = 300.0
    shell_idle_timeout: float = 600.0
    pairing_session_bytes: int = 256 * 1024
    shell_session_bytes: int = 64 * 1024 * 1024
    rate_window: float = 60.0
    pairing_failure_limit: int = 5
    listen_limit: int = 10
    shell_request_limit: int = 20
    prefix_limit_factor: int = 4
    shell_failure_limit: int = 3
    watch_failure_limit: int = 10
    bootstrap_failure_limit: int = 10
    agent_failure_limit: int = 10
    otc_failure_budget: int = 5
    global_failure_budget: int = 1000
    watcher_ttl: float = 300.0
    max_watches_per_socket: int = 16
    jti_ttl: float = 25 * 3600.0
    max_consumed_jtis: int = 1_000_000
    agent_heartbeat_timeout: float = 90.0
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    send_timeout: float = 10.0
    sweep_interval: float = 1.0
    max_tracked_ips: int = 100_000
    log_level: str = "INFO"
    log_format: str = "text"
    redis_url: str = ""
    instance_ttl: float = 5.0
    workers: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> RelayConfig:
        """Settings from environment variables; ``overrides`` (not None) win over them."""
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw is None or (raw.strip() == "" and setting.name != "trust_proxy"):
                continue
            values[setting.name] = parse_setting(setting, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_workers(self, *, from_flag: bool = False) -> None:
        """Several workers share one port and the kernel spreads connections over them, so
        the two peers of one code may land on different workers: only Redis joins them."""
        given = f"--workers {self.workers}" if from_flag else f"AMESH_WORKERS={self.workers}"
        if self.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError(
                f"{given} needs SO_REUSEPORT, which this system lacks; run one worker per port "
                "behind the load balancer instead."
            )
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"{given} needs AMESH_REDIS_URL, because the two peers of a pairing may reach "
                "different workers; set AMESH_REDIS_URL or run one worker."
            )


def parse_setting(setting: Setting, raw: str, *, from_flag: bool = False) -> Any:
    """Parse one raw value, turning any failure into a one-sentence :class:`ConfigError` that
    names the flag or the variable it came from."""
    try:
        return setting.parse(raw)
    except ConfigError:
        raise
    except ValueError as exc:
        given = (
            f"{setting.flag} {setting.shown(raw)!r}"
            if from_flag
            else (f"{setting.env}={setting.shown(raw)!r}")
        )
        fix = "fix the value" if from_flag else "fix the value or unset it to use the default"
        raise ConfigError(f"{given} is invalid ({exc}); {fix}.") from None


# AMESH_* variables of the authmesh client, which may share an environment with the relay.
_CLIENT_VARIABLES = frozenset(
    {
        "AMESH_RELAY_URL",
        "AMESH_PASSPHRASE_FILE",
        "AMESH_DIR",
        "AMESH_DEBUG",
        "AMESH_BOOTSTRAP_TOKEN",
    }
)


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``AMESH_*`` variable that no setting reads (most likely misspelt),
    naming the closest setting."""
    known = [setting.env for setting in SETTINGS]
    warnings = []
    for name in sorted(environ):
        if not name.startswith("AMESH_") or name in known or name in _CLIENT_VARIABLES:
            continue
        # Compared without the common prefix, which would make every name look close.
        suffixes = {env.removeprefix("AMESH_"): env for env in known}
        close = difflib.get_close_matches(name.removeprefix("AMESH_"), suffixes, n=1, cutoff=0.7)
        hint = (
            f"did you mean {suffixes[close[0]]}?"
            if close
            else "see amesh-relay --help for the settings."
        )
        warnings.append(f"{name} is not a relay setting and is ignored; {hint}")
    return warnings


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "HOST", str, "bind address (default 0.0.0.0)"),
    Setting("port", "PORT", _port, "listen port, 0 picks a free one (default 3001)"),
    Setting(
        "trust_proxy",
        "AMESH_TRUST_PROXY",
        parse_trust_proxy,
        "proxy hops to trust for X-Forwarded-For: 1/true/yes = one, N = N (default: none)",
    ),
    Setting("max_connections", "AMESH_MAX_CONNECTIONS", _positive_int, "WebSockets (10000)"),
    Setting(
        "max_connections_per_ip",
        "AMESH_MAX_CONNECTIONS_PER_IP",
        _positive_int,
        "WebSockets per client IP (256)",
    ),
    Setting("max_sessions", "AMESH_MAX_SESSIONS", _positive_int, "pairing+shell sessions (50000)"),
    Setting("pairing_ttl", "AMESH_PAIRING_TTL", _positive_float, "pairing session lifetime s (60)"),
    Setting(
        "sas_pairing_ttl",
        "AMESH_SAS_PAIRING_TTL",
        _positive_float,
        "protocol-2 pairing session lifetime s, covers the operator typing the SAS (300)",
    ),
    Setting(
        "shell_idle_timeout",
        "AMESH_SHELL_IDLE_TIMEOUT",
        _positive_float,
        "shell session ends after this many idle seconds (600)",
    ),
    Setting(
        "pairing_session_bytes",
        "AMESH_PAIRING_SESSION_BYTES",
        _positive_int,
        "bytes one pairing session may forward (262144)",
    ),
    Setting(
        "shell_session_bytes",
        "AMESH_SHELL_SESSION_BYTES",
        _positive_int,
        "bytes one shell session may forward (67108864)",
    ),
    Setting("rate_window", "AMESH_RATE_WINDOW", _positive_float, "rate-limit window s (60)"),
    Setting(
        "pairing_failure_limit",
        "AMESH_PAIRING_FAILURE_LIMIT",
        _positive_int,
        "failed listen/connect per address per window (5)",
    ),
    Setting(
        "listen_limit",
        "AMESH_LISTEN_LIMIT",
        _positive_int,
        "codes one address may open (listen) per window, successful or not (10)",
    ),
    Setting(
        "shell_request_limit",
        "AMESH_SHELL_REQUEST_LIMIT",
        _positive_int,
        "shell requests one address may send per window, answered or not (20)",
    ),
    Setting(
        "prefix_limit_factor",
        "AMESH_PREFIX_LIMIT_FACTOR",
        _positive_int,
        "a network prefix (IPv4 /24, IPv6 /48) gets this many times each per-address limit (4)",
    ),
    Setting(
        "shell_failure_limit",
        "AMESH_SHELL_FAILURE_LIMIT",
        _positive_int,
        "unmatched shell requests per IP per window (3)",
    ),
    Setting(
        "watch_failure_limit",
        "AMESH_WATCH_FAILURE_LIMIT",
        _positive_int,
        "refused bootstrap_watch per IP per window (10)",
    ),
    Setting(
        "bootstrap_failure_limit",
        "AMESH_BOOTSTRAP_FAILURE_LIMIT",
        _positive_int,
        "refused bootstrap_init per IP per window (10)",
    ),
    Setting(
        "agent_failure_limit",
        "AMESH_AGENT_FAILURE_LIMIT",
        _positive_int,
        "failed agent registrations per IP per window (10)",
    ),
    Setting(
        "otc_failure_budget",
        "AMESH_OTC_FAILURE_BUDGET",
        _positive_int,
        "failed attempts on one live code before it is burned (5)",
    ),
    Setting(
        "global_failure_budget",
        "AMESH_GLOBAL_FAILURE_BUDGET",
        _positive_int,
        "failed connects per window from all addresses before only addresses without failures "
        "may connect (1000)",
    ),
    Setting(
        "watcher_ttl", "AMESH_WATCHER_TTL", _positive_float, "bootstrap watch lifetime s (300)"
    ),
    Setting(
        "max_watches_per_socket",
        "AMESH_MAX_WATCHES_PER_SOCKET",
        _positive_int,
        "jtis one socket may watch (16)",
    ),
    Setting("jti_ttl", "AMESH_JTI_TTL", _positive_float, "consumed-jti memory s (90000)"),
    Setting(
        "max_consumed_jtis",
        "AMESH_MAX_CONSUMED_JTIS",
        _positive_int,
        "consumed jtis remembered (1000000)",
    ),
    Setting(
        "agent_heartbeat_timeout",
        "AMESH_AGENT_HEARTBEAT_TIMEOUT",
        _positive_float,
        "agent dropped without ping for s (90)",
    ),
    Setting(
        "handshake_timeout",
        "AMESH_HANDSHAKE_TIMEOUT",
        _positive_float,
        "seconds to finish the HTTP upgrade (10)",
    ),
    Setting(
        "idle_timeout",
        "AMESH_IDLE_TIMEOUT",
        _positive_float,
        "close a socket with no session/watch/agent after s without messages (120)",
    ),
    Setting("ping_interval", "AMESH_PING_INTERVAL", _positive_float, "protocol ping every s (30)"),
    Setting(
        "ping_timeout", "AMESH_PING_TIMEOUT", _positive_float, "drop without pong after s (30)"
    ),
    Setting(
        "send_timeout",
        "AMESH_SEND_TIMEOUT",
        _positive_float,
        "close a peer whose outgoing frames stay backed up for s (10)",
    ),
    Setting("sweep_interval", "AMESH_SWEEP_INTERVAL", _positive_float, "expiry sweep every s (1)"),
    Setting(
        "max_tracked_ips",
        "AMESH_MAX_TRACKED_IPS",
        _positive_int,
        "rate-limit entries kept per limiter (100000)",
    ),
    Setting("log_level", "AMESH_LOG_LEVEL", _log_level, "debug|info|warning|error (info)"),
    Setting("log_format", "AMESH_LOG_FORMAT", _log_format, "text|json (text)"),
    Setting(
        "redis_url",
        "AMESH_REDIS_URL",
        _redis_url,
        "share state with other instances through this Redis (default: none, state in memory)",
        shown=lambda raw: redacted_url(raw.strip()),
    ),
    Setting(
        "workers",
        "AMESH_WORKERS",
        _workers,
        "relay processes sharing the port (SO_REUSEPORT); more than 1 needs AMESH_REDIS_URL (1)",
    ),
    Setting(
        "instance_ttl",
        "AMESH_INSTANCE_TTL",
        _positive_float,
        "with Redis: an instance silent this many s is dead to the others (5)",
    ),
)
