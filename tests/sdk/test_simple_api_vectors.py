"""middleware.json ``amesh_verify_simple_api``: the zero-config path, on a reference home.

The reference's ``amesh.verify()`` loads the identity from the amesh directory; ours
is ``Verifier.from_home()`` (here behind uvicorn and the ASGI middleware). It differs
on purpose where ``amesh.verify()`` is weak: it reads the ``.passphrase`` file (W7),
hashes raw bytes instead of re-serialised or UTF-8-decoded bodies (W6, the M5 bug),
enforces ``max_body_bytes``, and unlocks the key once instead of per call (W8).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._verifier import Verifier
from authmesh.store import Context, load_context
from authmesh.store._home import AmeshHome
from tests.conformance.ledger import record
from tests.sdk.apps import AsgiDispatcher
from tests.sdk.harness import build_request, send_raw, uvicorn_server
from tests.support.vectorfiles import load

SIMPLE = load("middleware.json")["amesh_verify_simple_api"]
ACCEPTED = "next()"
RAW_BODY = "W6/M5: raw bytes are hashed, never a re-serialised or decoded body"
DEVIATIONS: dict[str, tuple[Any, str]] = {
    "simple_no_passphrase_env": (ACCEPTED, "W7: the .passphrase file is honoured"),
    "simple_parsed_whitespace_json": (ACCEPTED, RAW_BODY),
    "simple_parsed_number_form": (ACCEPTED, RAW_BODY),
    "simple_binary_buffer_body": (ACCEPTED, RAW_BODY),
    "simple_binary_stream": (ACCEPTED, RAW_BODY),
    "simple_bodyparser1_get": (ACCEPTED, RAW_BODY),
    "simple_no_body_limit": ((413, "payload_too_large"), "§6.7: the body limit always applies"),
}


def write_home(root: Path) -> Path:
    """The reference-written home of the vectors, with its file modes."""
    for name, spec in SIMPLE["amesh_home"]["files"].items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(spec["content"], encoding="utf-8")
        os.chmod(path, int(spec["mode"], 8))
    return root


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[AsgiDispatcher, int]]:
    dispatcher = AsgiDispatcher()
    with uvicorn_server(dispatcher) as port:
        yield dispatcher, port


def _body(request: dict[str, Any]) -> bytes:
    if "body_fill" in request:
        fill = request["body_fill"]
        return bytes.fromhex(fill["byte_hex"]) * fill["count"]
    return bytes.fromhex(request["body_hex"])


def _send(port: int, vector: dict[str, Any]) -> Any:
    request = vector["request"]
    raw = build_request(
        request["method"],
        request["target"],
        [tuple(pair) for pair in request["headers"]],  # type: ignore[misc]
        _body(request),
    )
    return send_raw(port, raw)


def _check(vector: dict[str, Any], response: Any) -> None:
    outcome = DEVIATIONS.get(vector["name"], (None, ""))[0]
    if outcome is None:
        expected = vector["expected"]
        outcome = (
            ACCEPTED
            if expected["outcome"] == ACCEPTED
            else (expected["status"], expected["json"]["error"])
        )
    if outcome == ACCEPTED:
        assert response.status == 200, response.body
        if vector["expected"].get("attached_identity"):
            assert json.loads(response.body)["authMesh"] == vector["expected"]["attached_identity"]
    else:
        assert (response.status, json.loads(response.body)["error"]) == outcome


def test_simple_api_vectors(
    server: tuple[AsgiDispatcher, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, port = server
    home = write_home(tmp_path / "amesh")
    monkeypatch.delenv("AUTH_MESH_PASSPHRASE", raising=False)
    monkeypatch.delenv("AMESH_PASSPHRASE_FILE", raising=False)
    context = load_context(AmeshHome(home))  # one Argon2id for the whole test
    _check_home(context)

    verifier: Verifier | None = None
    for index, vector in enumerate(SIMPLE["vectors"]):
        name = vector["name"]
        if name == "simple_fetch_timing":
            _check_signing_cost(home, vector)
        else:
            now = vector["now"]
            if name == "simple_no_passphrase_env":
                verifier = Verifier.from_home(  # W7
                    home, clock=lambda now=now: now, allow_list_recheck_seconds=0
                )
            elif name not in ("simple_replay_second", "simple_allow_list_tampered_after_start"):
                # Recheck on every request, as the reference re-reads the file: the
                # tampering below must be seen by the very next request.
                verifier = Verifier(
                    context.allow_list, clock=lambda now=now: now, allow_list_recheck_seconds=0
                )
            assert verifier is not None
            if name == "simple_allow_list_tampered_after_start":
                allow_list = home / "allow_list.json"
                os.chmod(allow_list, 0o600)
                allow_list.write_text(
                    allow_list.read_text().replace("Controller One", "Controller 0ne")
                )
            dispatcher.use(verifier)
            with caplog.at_level(logging.ERROR, logger="authmesh.sdk"):
                response = _send(port, vector)
            _check(vector, response)
            if name == "simple_allow_list_tampered_after_start":
                assert [r.getMessage() for r in caplog.records] == vector["expected"]["log_lines"]
        record("middleware.json", "amesh_verify_simple_api.vectors", index)


def _check_home(context: Context) -> None:
    """The reference-written home loads as recorded: identity, key, sealed allow list."""
    expected = SIMPLE["amesh_home"]["expected"]
    assert context.identity.device_id == expected["device_id"]
    assert context.identity.key_alias == expected["key_alias"]
    message = expected["sign_message_utf8"].encode("utf-8")
    assert context.signer.sign(message).hex() == expected["signature_hex"]
    devices = context.allow_list.snapshot().devices
    assert expected["allow_list_verifies"]
    for index, (device, recorded) in enumerate(zip(devices, expected["devices"], strict=True)):
        assert dict(device.fields) == recorded
        record("middleware.json", "amesh_verify_simple_api.amesh_home.expected.devices", index)


def _check_signing_cost(home: Path, vector: dict[str, Any]) -> None:
    """W8: the reference re-derives Argon2id per call (~1 s); we unlock once."""
    auth = AuthMeshAuth.from_home(home)
    assert base64.b64decode(auth.signer.public_key_b64)  # the home's identity key
    request = httpx.Request("GET", "http://api.example.com/x")
    started = time.perf_counter()
    for _ in range(20):
        next(auth.sync_auth_flow(request))
    per_call_ms = (time.perf_counter() - started) / 20 * 1000
    assert per_call_ms < 50 < min(vector["milliseconds_per_call"])
