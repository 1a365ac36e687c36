"""Every middleware.json request replayed through each adapter behind a real server.

ASGI runs under uvicorn, Flask (WSGI) and Django under werkzeug's server. Each
vector gets its own allow list file, nonce store (pre-loaded as recorded) and a
clock fixed at the recorded ``now``. The status and JSON body must equal the
reference's, except where our hardening deliberately differs; those cases are
listed in ``DEVIATIONS`` with the weakness (spec sdk-keystore.md §10) they fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from authmesh.core._allowlist import derive_allow_list_key
from authmesh.core._header import HeaderError, parse_header
from authmesh.core._nonce import DEFAULT_CAPACITY, InMemoryNonceStore
from authmesh.sdk._verifier import SERVER_TIME_HEADER, Verifier
from authmesh.store import AllowListStore, AmeshHome
from tests.conformance.ledger import record
from tests.sdk.harness import build_request, send_raw
from tests.support.vectorfiles import load

MIDDLEWARE = load("middleware.json")
VECTORS = MIDDLEWARE["vectors"]
ALLOW_LIST_KEY = derive_allow_list_key(
    bytes.fromhex(MIDDLEWARE["hmac_key_material_hex"]), MIDDLEWARE["server_device_id"]
)
CONTROLLER_ID = MIDDLEWARE["keys"]["K1"]["device_id"]

ACCEPTED = "next()"
RAW_BODY = "§6.7/W6: adapters hash the raw bytes they read themselves, never a parsed body"
DEVIATIONS: dict[str, tuple[Any, str]] = {
    "binary_as_string_body_fails": (ACCEPTED, RAW_BODY),
    "parsed_object_without_rawbody": (ACCEPTED, RAW_BODY),
    "bodyparser1_get_empty_object": (ACCEPTED, RAW_BODY),
    "too_large_but_buffered_upstream": (
        (413, "payload_too_large"),
        "§6.7: maxBodyBytes always applies, as the adapters always read the raw body",
    ),
    "lax_timestamp_parse": ((401, "unauthorized"), "W14: ts must be 1-12 plain digits"),
    "role_other_value_accepted": ((401, "unauthorized"), "W17: only controllers authenticate"),
    "host_with_space": (ACCEPTED, "W6: v1 canonicalises the raw target; Host is not parsed"),
    "express_mount_path_stripped": (
        ACCEPTED,
        "W6: the original request-target is canonicalised, never a mount-relative path",
    ),
    "unsupported_version": (
        (401, "unauthorized"),
        'W15: we also speak v2, so v="2" is checked (here: not a valid v2 signature)',
    ),
    "allow_list_missing_hmac": ((500, "internal_error"), "W17: malformed list = integrity failure"),
    "allow_list_not_json": ((500, "internal_error"), "W17: malformed list = integrity failure"),
}
NORMALISED_ONLY = (
    (400, "malformed_request"),
    "issue 10: a target must arrive in its normalised form, as the app may read others apart",
)
for _name in (
    "dot_segments_normalised_by_server",
    "dot_segments_signed_raw_fails",
    "path_caret_encoded_by_bun",
    "fragment_in_target",
):
    DEVIATIONS[_name] = NORMALISED_ONLY
ADAPTER_DEVIATIONS: dict[tuple[str, str], tuple[Any, str]] = {
    ("asgi", "fragment_in_target"): (
        ACCEPTED,
        "uvicorn drops the fragment before any ASGI app (or the middleware) sees the target",
    ),
}


def _expected(vector: dict[str, Any], adapter_name: str) -> tuple[Any, str | None]:
    if (adapter_name, vector["name"]) in ADAPTER_DEVIATIONS:
        return ADAPTER_DEVIATIONS[adapter_name, vector["name"]]
    if vector["name"] in DEVIATIONS:
        return DEVIATIONS[vector["name"]]
    expected = vector["expected"]
    if expected["outcome"] == ACCEPTED:
        return ACCEPTED, None
    if expected["outcome"] == "rejected_by_http_server":
        return (expected["status"], None), None
    return (expected["status"], expected["json"]["error"]), None


def _request_bytes(request: dict[str, Any]) -> bytes:
    if "raw_b64" in request:
        return base64.b64decode(request["raw_b64"])
    return build_request(
        request["method"],
        request["target"],
        [tuple(pair) for pair in request["headers"]],  # type: ignore[misc]
        bytes.fromhex(request["body_hex"]),
        chunked=request.get("transfer_encoding") == "chunked",
    )


def _header_fields(vector: dict[str, Any]) -> tuple[str | None, str | None]:
    """(device id of the header's key, nonce) when the request carries a parsable header."""
    request = vector["request"]
    if "raw_latin1" in request:
        found = re.search(r"Authorization: (AuthMesh [^\r]*)", request["raw_latin1"])
        value = found.group(1) if found else None
    else:
        value = next((v for k, v in request["headers"] if k == "Authorization"), None)
    try:
        header = parse_header(value)
    except HeaderError:
        return None, None
    keys = {k["public_key_b64"]: k["device_id"] for k in MIDDLEWARE["keys"].values()}
    return keys.get(header.id, CONTROLLER_ID), header.nonce


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verifier(vector: dict[str, Any], home: Path) -> tuple[Verifier, InMemoryNonceStore]:
    home.mkdir()
    text = MIDDLEWARE["allow_lists"][vector["allow_list"]]
    if text is not None:
        (home / "allow_list.json").write_text(text, encoding="utf-8")
    device_id, _ = _header_fields(vector)
    clock = FixedClock(0)
    capacity = vector["server"].get("nonce_store_max_size", DEFAULT_CAPACITY)
    nonces = InMemoryNonceStore(capacity, clock=clock)
    for prior in vector["nonce_store_prior"]:
        clock.now = prior["recorded_at"]
        assert nonces.check_and_store(f"{device_id}:{prior['nonce']}", prior["ttl"])
    clock.now = vector["now_ms"] / 1000
    options = {**MIDDLEWARE["defaults"], **vector["server"]["options"]}
    verifier = Verifier(
        AllowListStore(AmeshHome(home), ALLOW_LIST_KEY),
        clock_skew_seconds=options["clockSkewSeconds"],
        nonce_window_seconds=options["nonceWindowSeconds"],
        max_body_bytes=options["maxBodyBytes"],
        nonce_store=nonces,
        clock=clock,
    )
    return verifier, nonces


def test_allow_list_key_matches_the_vectors() -> None:
    assert ALLOW_LIST_KEY.hex() == MIDDLEWARE["allow_list_hmac_key_hex"]


@pytest.mark.parametrize(
    ("index", "vector"), list(enumerate(VECTORS)), ids=[v["name"] for v in VECTORS]
)
def test_replay_through_adapter(
    adapter: tuple[str, Any, int],
    index: int,
    vector: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter_name, dispatcher, port = adapter
    verifier, nonces = _verifier(vector, tmp_path / "home")
    dispatcher.use(verifier)
    held_before = len(nonces)
    with caplog.at_level(logging.WARNING, logger="authmesh.sdk"):
        response = send_raw(port, _request_bytes(vector["request"]))
    outcome, deviation = _expected(vector, adapter_name)
    reference = vector["expected"]

    if outcome == ACCEPTED:
        assert response.status == 200, response.body
        echoed = json.loads(response.body) if response.body else None
        if vector["request"].get("method") != "HEAD":
            assert echoed is not None
            if reference.get("attached_identity"):
                assert echoed["authMesh"] == reference["attached_identity"]
            body = bytes.fromhex(vector["request"].get("body_hex", ""))
            assert echoed["bodySha256"] == hashlib.sha256(body).hexdigest()
    else:
        status, error = outcome
        assert response.status == status, response.body
        if error is not None:
            assert response.headers["content-type"] == "application/json"
            assert response.body == json.dumps({"error": error}, separators=(",", ":")).encode()
        if status == 401:
            assert response.headers[SERVER_TIME_HEADER.lower()] == str(vector["now"])

    lines = [record.getMessage() for record in caplog.records if record.name == "authmesh.sdk"]
    device_id, nonce = _header_fields(vector)
    for line in lines:  # house rule: no device ids or nonces in logs
        assert CONTROLLER_ID not in line and (nonce is None or nonce not in line)
    if deviation is None:
        expected_lines = [re.sub(r"device=\S+ ", "", line) for line in reference["log_lines"]]
        assert lines == expected_lines

    if nonce is not None and device_id is not None:
        # W10: we record a nonce only for an accepted request (or it was there before);
        # the reference also records it for forged, oversized and mis-parsed requests.
        was_prior = any(p["nonce"] == nonce for p in vector["nonce_store_prior"])
        recorded = len(nonces) > held_before
        if outcome != ACCEPTED:
            assert not recorded
        elif not was_prior:
            assert recorded
    record("middleware.json", "vectors", index)
