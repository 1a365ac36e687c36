"""``amesh-relay``: run the relay until SIGTERM/SIGINT, then close every socket and exit 0.

Every setting can be given as an environment variable (``PORT``, ``HOST``, ``AMESH_*``) or as
the matching flag (``--port``, ``--max-sessions``, ...); flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version

from authmesh.relay._config import (
    SETTINGS,
    ClusterUnavailable,
    ConfigError,
    RelayConfig,
    parse_setting,
    unknown_variable_warnings,
)
from authmesh.relay._logs import configure_logging
from authmesh.relay._server import RelayServer, run
from authmesh.relay._workers import supervise

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amesh-relay",
        description="authmesh pairing relay (wire-compatible with the amesh reference relay).",
    )
    parser.add_argument("--version", action="version", version=f"amesh-relay {_version()}")
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            metavar="VALUE",
            help=(f"{setting.help}; env {setting.env}"),
        )
    return parser


def _version() -> str:
    try:
        return version("authmesh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _config(argv: Sequence[str] | None) -> tuple[RelayConfig, set[str]]:
    """The settings, and the names of those given as flags."""
    args = _parser().parse_args(argv)
    overrides = {}
    for setting in SETTINGS:
        raw = getattr(args, setting.name)
        if raw is not None:
            overrides[setting.name] = parse_setting(setting, raw, from_flag=True)
    return RelayConfig.from_env(os.environ, **overrides), set(overrides)


async def _serve(config: RelayConfig, started: Callable[[RelayServer], None]) -> None:
    relay = RelayServer(config)
    await relay.start()
    started(relay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await relay.stop()


def _announce(config: RelayConfig) -> None:
    """Same two start-up lines as the reference relay (relay spec §6.1)."""
    print(f"amesh relay listening on ws://{config.host}:{config.port}/ws", flush=True)
    print(f"Health check: http://{config.host}:{config.port}/health", flush=True)


def _run_relay(config: RelayConfig, flags: set[str], started: Callable[[RelayServer], None]) -> int:
    """One relay instance until SIGTERM/SIGINT; the exit status."""
    try:
        run(_serve(config, started))
    except ClusterUnavailable as exc:
        if "redis_url" in flags:
            exc.setting = "--redis-url"
        print(f"amesh-relay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        return _cannot_listen(config, exc)
    return 0


def _cannot_listen(config: RelayConfig, exc: OSError) -> int:
    print(
        f"amesh-relay: cannot listen on {config.host}:{config.port} ({exc.strerror}); "
        "choose another PORT/HOST or stop the process using it.",
        file=sys.stderr,
    )
    return 1


def _run_workers(config: RelayConfig, flags: set[str]) -> int:
    """``config.workers`` instances on one port (see ``workers.py``)."""

    def worker(config: RelayConfig, ready: int) -> int:
        def listening(relay: RelayServer) -> None:
            os.write(ready, b"r")

        return _run_relay(config, flags, listening)

    try:
        return supervise(config, worker, _announce)
    except OSError as exc:
        return _cannot_listen(config, exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    try:
        config, flags = _config(argv)
        config.check_workers(from_flag="workers" in flags)
    except ConfigError as exc:
        print(f"amesh-relay: {exc}", file=sys.stderr)
        return 2
    for warning in unknown_variable_warnings(os.environ):
        print(f"amesh-relay: warning: {warning}", file=sys.stderr)
    configure_logging(config.log_level, config.log_format)
    if config.workers > 1:
        return _run_workers(config, flags)
    return _run_relay(config, flags, lambda relay: _announce(replace(config, port=relay.port)))
