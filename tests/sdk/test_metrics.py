"""Verification outcomes as Prometheus counters, a histogram and structured log events."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._metrics import Outcome, VerificationMetrics
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Rejection, Verifier
from tests.sdk.harness import build_request, send_raw
from tests.support.sdk import trusted_store, vector_key

NOW = 1_800_000_000
K1, K2, K3 = vector_key("K1"), vector_key("K2"), vector_key("K3")
HOST = "api.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("authmesh_verifications_total", {"outcome": outcome})
    return value or 0.0


def observed(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("authmesh_verification_seconds_count", {"outcome": outcome})
    return value or 0.0


class FailingStore:
    def check_and_store(self, key: str, ttl_seconds: int) -> bool:
        raise ConnectionError("redis is down")


def _header(key: Any, *, target: str = "/x", ts_offset: int = 0, version: str = "1") -> str:
    signer = RequestSigner(key, version=version, clock=lambda: NOW + ts_offset)
    return signer.authorization("GET", target, EMPTY_BODY_SHA256, HOST)


@pytest.fixture
def metrics() -> tuple[VerificationMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return VerificationMetrics(registry), registry


def test_every_outcome_is_counted_by_reason(
    tmp_path: Path, metrics: tuple[VerificationMetrics, CollectorRegistry]
) -> None:
    observer, registry = metrics
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1), (K3, "target", 1)])
    clock = Clock()

    def verifier(**options: Any) -> Verifier:
        options.setdefault("nonce_store", InMemoryNonceStore(clock=clock))
        return Verifier(store, clock=clock, observer=observer, **options)

    accepting = verifier()
    good = _header(K1)
    accepting.verify("GET", "/x", good, HOST, b"")
    cases: list[tuple[Verifier, str, str | None, str, int]] = [
        (accepting, "/x", good, "replay", 401),
        (accepting, "/x", _header(K2), "unknown_device", 401),
        (accepting, "/x", _header(K3), "role_refused", 401),
        (accepting, "/y", _header(K1), "bad_signature", 401),
        (accepting, "/x", _header(K1, ts_offset=-120), "skew", 401),
        (
            verifier(authorities=["other.example"]),
            "/x",
            _header(K1, version="2"),
            "wrong_authority",
            401,
        ),
        (verifier(nonce_store=FailingStore()), "/x", _header(K1), "store_failure", 500),
        (accepting, "/a/../x", _header(K1), "malformed", 400),
        (accepting, "/x", None, "malformed", 400),
    ]
    for checker, target, header, _, status in cases:
        with pytest.raises(Rejection) as refused:
            checker.verify("GET", target, header, HOST, b"")
        assert refused.value.status == status
    with pytest.raises(Rejection):
        accepting.check_content_length("999999999")
    assert count(registry, "accepted") == 1 and observed(registry, "accepted") == 1
    for _, _, _, outcome, _ in cases:
        assert count(registry, outcome) >= 1, outcome
    assert count(registry, "malformed") == 2
    assert count(registry, "too_large") == 1
    assert observed(registry, "too_large") == 0  # no verification time to report
    assert {outcome.value for outcome in Outcome} >= {case[3] for case in cases}


def test_events_carry_no_secrets_and_are_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monotonic = Clock()
    observer = VerificationMetrics(CollectorRegistry(), log_per_second=3, monotonic=monotonic)
    clock = Clock()
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1)])
    verifier = Verifier(store, clock=clock, observer=observer)
    headers = [_header(K1, target="/secret?token=abc") for _ in range(6)]
    with caplog.at_level(logging.DEBUG, logger="authmesh.sdk.events"):
        verifier.verify("GET", "/secret?token=abc", headers[0], HOST, b"")
        for header in headers[1:]:  # signed for another path: bad signatures
            with pytest.raises(Rejection):
                verifier.verify("GET", "/other", header, HOST, b"")
        monotonic.now += 1
        with pytest.raises(Rejection):
            verifier.verify("GET", "/other", _header(K1), HOST, b"")
    events = [r for r in caplog.records if r.name == "authmesh.sdk.events"]
    outcomes = [(r.outcome, r.suppressed) for r in events]  # type: ignore[attr-defined]
    assert outcomes == [("accepted", 0)] + [("bad_signature", 0)] * 3 + [("bad_signature", 2)]
    accepted = events[0]
    assert accepted.levelno == logging.DEBUG and accepted.status == 200  # type: ignore[attr-defined]
    assert accepted.version == "1" and accepted.duration_us > 0  # type: ignore[attr-defined]
    for record in events:
        text = record.getMessage() + repr(record.__dict__)
        for secret in (K1.device_id, K1.public_key_b64, "token=abc", "/secret", *headers):
            assert secret not in text
        for header in headers:
            fields = dict(part.split("=", 1) for part in header[len("AuthMesh ") :].split(","))
            assert fields["nonce"].strip('"') not in text
            assert fields["sig"].strip('"') not in text


def test_each_adapter_reports_through_the_verifier(
    adapter: tuple[str, Any, int], tmp_path: Path
) -> None:
    """Adapters pass the Verifier through: its observer sees their requests."""
    _, dispatcher, port = adapter
    registry = CollectorRegistry()
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1)])
    dispatcher.use(Verifier(store, observer=VerificationMetrics(registry)))
    good = RequestSigner(K1).authorization("GET", "/m", EMPTY_BODY_SHA256)
    for header in (good, good, "AuthMesh nonsense"):
        response = send_raw(
            port, build_request("GET", "/m", [("Host", HOST), ("Authorization", header)], b"")
        )
        assert response.status in (200, 400, 401)
    assert (count(registry, "accepted"), count(registry, "replay")) == (1, 1)
    assert count(registry, "malformed") == 1
