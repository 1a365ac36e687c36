"""Prometheus metrics for ``/metrics``, read from the relay core at scrape time.

A private :class:`CollectorRegistry` is used so several relays in one process (tests) never
share or collide on metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from authmesh.relay._protocol import RelayCore

__all__ = ["CONTENT_TYPE", "RelayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _CoreCollector(Collector):
    def __init__(self, core: RelayCore) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        core, stats = self._core, self._core.stats
        sizes = core.sizes()
        yield GaugeMetricFamily(
            "authmesh_relay_connections", "Open WebSocket connections.", value=sizes["connections"]
        )
        yield GaugeMetricFamily(
            "authmesh_relay_sessions", "Pairing and shell sessions.", value=sizes["sessions"]
        )
        yield GaugeMetricFamily(
            "authmesh_relay_agents", "Registered agents.", value=sizes["agents"]
        )
        yield GaugeMetricFamily(
            "authmesh_relay_bootstrap_watchers", "Bootstrap watches.", value=sizes["watchers"]
        )
        yield CounterMetricFamily(
            "authmesh_relay_connections_opened",
            "WebSockets accepted.",
            value=stats.connections_opened,
        )
        yield CounterMetricFamily(
            "authmesh_relay_pairings_completed",
            "Pairing sessions in which both peers met.",
            value=stats.pairings,
        )
        yield CounterMetricFamily(
            "authmesh_relay_shell_sessions", "Shell sessions routed.", value=stats.shell_sessions
        )
        yield CounterMetricFamily(
            "authmesh_relay_bootstrap_forwarded",
            "bootstrap_init messages forwarded to a watcher.",
            value=stats.bootstrap_forwarded,
        )
        yield CounterMetricFamily(
            "authmesh_relay_bytes_forwarded",
            "Bytes of data messages forwarded.",
            value=stats.bytes_forwarded,
        )
        entries = GaugeMetricFamily(
            "authmesh_relay_state_entries", "Entries in each bounded relay map.", labels=["map"]
        )
        for name, size in sorted(sizes.items()):
            entries.add_metric([name], size)
        yield entries
        rejections = CounterMetricFamily(
            "authmesh_relay_rejections", "Requests refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections
        limited = CounterMetricFamily(
            "authmesh_relay_rate_limit_hits", "Requests refused by a limiter.", labels=["limiter"]
        )
        for limiter, count in sorted(stats.rate_limited.items()):
            limited.add_metric([limiter], count)
        yield limited


class _ClusterCollector(Collector):
    def __init__(self, status: Callable[[], Mapping[str, int]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield GaugeMetricFamily(
            "authmesh_relay_redis_up",
            "1 while Redis answers, 0 while the relay is degraded.",
            value=status["redis_up"],
        )
        yield CounterMetricFamily(
            "authmesh_relay_redis_losses", "Times Redis was lost.", value=status["redis_losses"]
        )
        yield GaugeMetricFamily(
            "authmesh_relay_forwarded_sockets",
            "Sockets of this instance handled by another instance.",
            value=status["forwarded_sockets"],
        )
        yield GaugeMetricFamily(
            "authmesh_relay_guest_sockets",
            "Sockets of other instances handled by this one.",
            value=status["guest_sockets"],
        )


class RelayMetrics:
    """The metrics registry of one relay."""

    def __init__(self, core: RelayCore) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_CoreCollector(core))

    def add_cluster(self, status: Callable[[], Mapping[str, int]]) -> None:
        """Also export the state of the Redis cluster link (``status()`` at scrape time)."""
        self.registry.register(_ClusterCollector(status))

    def render(self) -> bytes:
        """The text exposition format body."""
        return generate_latest(self.registry)
