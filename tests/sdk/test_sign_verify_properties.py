"""Hypothesis: whatever the client signs verifies; any single-byte change is refused.

Run through the transport-free :class:`Verifier` (the adapters are covered by the
vector replays), with a fresh nonce store per example so a refusal is never just a
replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authmesh.core._canonical import body_sha256, request_target_path
from authmesh.core._header import parse_header
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Rejection, Verifier
from authmesh.store import AllowListStore
from tests.support.sdk import trusted_store, vector_key

NOW = 1_800_000_000
K1 = vector_key("K1")
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

segment = st.text(ALNUM + "-._~!$&'()*+,;=:@%", min_size=1, max_size=8)
query_part = st.text(ALNUM + "-._~!$'()*+,;:@/?", min_size=1, max_size=8)
requests_ = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "PURGE"]),
        "path": st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
        "query": st.lists(st.tuples(query_part, query_part), max_size=3).map(
            lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
        ),
        "body": st.binary(max_size=200),
        "version": st.sampled_from(["1", "2"]),
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> AllowListStore:
    return trusted_store(tmp_path_factory.mktemp("home") / "home", [(K1, "controller", 1)])


def _verifier(store: AllowListStore) -> Verifier:
    return Verifier(store, nonce_store=InMemoryNonceStore(clock=lambda: NOW), clock=lambda: NOW)


def _sign(request: dict[str, object]) -> tuple[str, str]:
    target = request_target_path(
        f"{request['path']}?{request['query']}" if request["query"] else str(request["path"])
    )
    signer = RequestSigner(K1, version=str(request["version"]), clock=lambda: NOW)
    body = request["body"]
    assert isinstance(body, bytes)
    header = signer.authorization(
        str(request["method"]), target, body_sha256(body), "api.example.com"
    )
    return target, header


def _flip(text: str, position: int, replacement: str) -> str:
    return text[:position] + replacement + text[position + 1 :]


settings_ = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(requests_)
def test_every_signed_request_verifies(store: AllowListStore, request: dict[str, object]) -> None:
    target, header = _sign(request)
    body = request["body"]
    assert isinstance(body, bytes)
    device = _verifier(store).verify(
        str(request["method"]), target, header, "api.example.com", body
    )
    assert device.device_id == K1.device_id and device.version == request["version"]


@settings_
@given(
    requests_,
    st.sampled_from(["method", "path", "query", "body", "ts", "nonce"]),
    st.data(),
)
def test_any_single_byte_change_is_refused(
    store: AllowListStore, request: dict[str, object], part: str, data: st.DataObject
) -> None:
    target, header = _sign(request)
    method = str(request["method"])
    body = request["body"]
    assert isinstance(body, bytes)
    fields = parse_header(header)
    path, _, query = target.partition("?")

    def other_alnum(original: str) -> str:
        return data.draw(st.sampled_from([c for c in ALNUM if c != original]))

    if part == "body":
        if not body:
            body = b"\x00"
        else:
            at = data.draw(st.integers(0, len(body) - 1))
            body = body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]
    elif part in ("ts", "nonce"):
        value = getattr(fields, part)
        at = data.draw(st.integers(0, len(value) - 1))
        changed = _flip(value, at, other_alnum(value[at]) if part == "nonce" else "9")
        if changed == value:
            changed = _flip(value, at, "8")
        header = header.replace(f'{part}="{value}"', f'{part}="{changed}"')
    else:
        text = {"method": method, "path": path, "query": query}[part]
        positions = [i for i, c in enumerate(text) if c.isalnum()]
        if not positions:  # e.g. no query: adding one byte is the change
            text += "x"
        else:
            at = data.draw(st.sampled_from(positions))
            text = _flip(text, at, other_alnum(text[at]))
            if part == "method":
                text = text.upper() if text.upper() != method else text
        method, path, query = (
            text if part == "method" else method,
            text if part == "path" else path,
            text if part == "query" else query,
        )
        target = f"{path}?{query}" if query else path
    with pytest.raises(Rejection) as caught:
        _verifier(store).verify(method, target, header, "api.example.com", body)
    assert caught.value.status in (400, 401)


def test_same_request_twice_is_a_replay(store: AllowListStore) -> None:
    verifier = _verifier(store)
    target, header = _sign(
        {"method": "GET", "path": "/x", "query": "", "body": b"", "version": "1"}
    )
    verifier.verify("GET", target, header, None, b"")
    with pytest.raises(Rejection) as caught:
        verifier.verify("GET", target, header, None, b"")
    assert (caught.value.status, caught.value.error) == (401, "unauthorized")


def test_nonce_lifetime_covers_the_clock_window(tmp_path: Path) -> None:
    store = trusted_store(tmp_path / "home", [(K1, "controller", 1)])
    verifier = Verifier(store, clock_skew_seconds=120, nonce_window_seconds=60)
    assert verifier.nonce_ttl_seconds == 241  # W12: max(window, 2 * skew + 1)
