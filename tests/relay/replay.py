"""Replays reference relay transcripts (relay spec Appendix format) against a relay process.

Client steps are performed, relay steps are checked exactly (frame text byte for byte, close
codes, HTTP status/body/content type). Two things cannot be copied from a recording and are
re-created instead:

* Agent keys and challenge signatures: every public key seen in an ``agent``/``shell`` frame is
  replaced by a fresh key we hold, device ids derived from it follow, and each challenge
  response is re-made with the same *kind* of (in)validity as the recorded one (valid,
  high-S, DER, truncated, another key, an older challenge) and the same base64 flavour.
* Silence (``none_within_ms``): instead of sleeping, every other client is synced with a
  ping round trip and then the checked client must get its pong as the very next frame — the
  relay handles messages in order, so anything it had to send would have come first.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._keys import (
    CURVE_ORDER,
    InvalidKeyError,
    PrivateKey,
    compress,
    device_id,
    load_public_key,
    normalize_low_s,
    verify,
)
from authmesh.relay._jsonwire import dumps
from tests.support.relay_clients import RECV_DEADLINE, Client, http_request
from tests.support.relayproc import RelayProcess

Step = dict[str, Any]
CustomStep = Callable[["Replay"], Awaitable[None]]

_JTI = re.compile(r"bt_[0-9a-f]{32}")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_PLACEHOLDER_IP = re.compile(r"<(CLIENT_IP|ATTACKER_IP|PROXY_IP)_?(\d*)>")
_IP_PREFIX = {"CLIENT_IP": "198.51.100.", "ATTACKER_IP": "192.0.2.", "PROXY_IP": "203.0.113."}
# websockets words these close reasons differently from Bun; the codes are what clients see.
_REASON_NOT_COMPARED = {1007, 1009}


def placeholder_ip(text: str) -> str:
    """``<CLIENT_IP_3>`` -> a fixed documentation address (distinct per placeholder)."""
    return _PLACEHOLDER_IP.sub(lambda m: _IP_PREFIX[m.group(1)] + (m.group(2) or "250"), text)


def custom(function: CustomStep) -> Step:
    """A step that runs ``function(replay)`` (used by scenario adaptations)."""
    return {"custom": function}


def time_passes(seconds: float) -> tuple[Step, Step]:
    """Two steps: a start mark, and a wait until ``seconds`` have passed since it.

    Used where the passing of time IS the scenario (a lifetime running out); everything else
    waits on conditions.
    """
    started = 0.0

    async def mark(replay: Replay) -> None:
        nonlocal started
        started = time.monotonic()

    async def wait(replay: Replay) -> None:
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))

    return custom(mark), custom(wait)


# ---------------------------------------------------------------------------- step builders


def to(client: str, frame: dict[str, Any]) -> Step:
    return {"from": f"relay→{client}", "opcode": "text", "frame": frame}


def error(client: str, code: str) -> Step:
    return to(client, {"type": "error", "code": code})


def silent(client: str) -> Step:
    return {"from": f"relay→{client}", "none_within_ms": 0}


def send(client: str, frame: Any, **extra: Any) -> Step:
    return {"from": f"client-{client}", "opcode": "text", "frame": frame, **extra}


def health(sessions: int, agents: int = 0) -> list[Step]:
    body = json.dumps(
        {"status": "ok", "sessions": sessions, "agents": agents}, separators=(",", ":")
    )
    return [
        {"from": "client-H", "event": "http_request", "method": "GET", "path": "/health"},
        {
            "from": "relay→H",
            "event": "http_response",
            "status_line": "HTTP/1.1 200 OK",
            "headers": [["Content-Type", "application/json;charset=utf-8"]],
            "body": body,
        },
    ]


def alive() -> Step:
    return {"from": "relay-process", "event": "process_state", "alive": True}


def replace(steps: list[Step], changes: dict[int, list[Step]]) -> list[Step]:
    """Replace step ``i`` by ``changes[i]`` (a list, possibly empty)."""
    out: list[Step] = []
    for index, step in enumerate(steps):
        out.extend(changes.get(index, [step]))
    return out


def _decode_key(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return compress(load_public_key(b64decode(text), allow_uncompressed=True))
    except (B64Error, InvalidKeyError):
        return None


def _encode_like(raw: bytes, original: str) -> str:
    """Base64 of ``raw`` in the same alphabet and padding style as ``original``."""
    url = "-" in original or "_" in original
    text = b64url_encode(raw) if url else b64encode(raw).rstrip("=")
    if original.endswith("="):
        text += "=" * (-len(text) % 4)
    return text


def _der(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _is_der_signature(raw: bytes, public_key: bytes, message: bytes) -> bool:
    try:
        r, s = decode_dss_signature(raw)
    except ValueError:
        return False
    return verify(public_key, r.to_bytes(32, "big") + s.to_bytes(32, "big"), message)


@dataclass
class _AgentKeys:
    """Our stand-in key for every recorded agent key, and device-id translation."""

    keys: dict[bytes, PrivateKey] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    known: dict[bytes, PrivateKey] = field(default_factory=dict)

    def learn(self, public_key_text: Any) -> None:
        recorded = _decode_key(public_key_text)
        if recorded is not None and recorded not in self.keys:
            ours = self.known.get(recorded) or PrivateKey.generate()
            self.keys[recorded] = ours
            self.ids[device_id(recorded)] = ours.device_id

    def ours(self, public_key_text: Any) -> PrivateKey | None:
        recorded = _decode_key(public_key_text)
        return self.keys.get(recorded) if recorded is not None else None

    def public_key(self, text: Any) -> Any:
        ours = self.ours(text)
        if ours is None:
            return text
        if len(b64decode(text)) == 65:
            numbers = load_public_key(ours.public_key).public_numbers()
            raw = b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
            return b64encode(raw)
        return ours.public_key_b64

    def device_id(self, text: Any) -> Any:
        return self.ids.get(text, text) if isinstance(text, str) else text


@dataclass
class _AgentState:
    recorded_key: Any = None
    recorded_challenges: list[str] = field(default_factory=list)
    our_challenges: list[str] = field(default_factory=list)


class Replay:
    """Runs one scenario's steps against ``relay``."""

    def __init__(
        self,
        relay: RelayProcess,
        steps: list[Step],
        client_ip: str | None = None,
        known_keys: Sequence[PrivateKey] = (),
    ) -> None:
        self.relay = relay
        self.steps = steps
        self.client_ip = client_ip
        # Scenarios share relays, so recorded jtis get a per-run suffix (same length): a jti
        # burned by one scenario must not be "already used" in the next.
        suffix = secrets.token_hex(3)
        self.rename = lambda text: _JTI.sub(lambda m: m.group()[:-6] + suffix, text)
        self.clients: dict[str, Client] = {}
        self.closing: set[str] = set()
        self.pings: dict[str, Any] = {}
        self.pending_http: tuple[int, str, dict[str, str], bytes] = (0, "", {}, b"")
        self.agents = _AgentKeys(known={key.public_key: key for key in known_keys})
        self.agent_state: dict[str, _AgentState] = {}
        for step in steps:
            frame = step.get("frame")
            if isinstance(frame, dict) and frame.get("type") in ("agent", "shell"):
                self.agents.learn(frame.get("publicKey", frame.get("targetPublicKey")))

    async def run(self) -> None:
        try:
            for index, step in enumerate(self.steps):
                try:
                    await self.step(step)
                except AssertionError as exc:
                    raise AssertionError(f"step {index} {json.dumps(step)[:300]}: {exc}") from exc
        finally:
            for client in self.clients.values():
                await client.close()

    # ------------------------------------------------------------------ dispatch

    async def step(self, step: Step) -> None:
        if "custom" in step:
            await step["custom"](self)
            return
        if "note" in step and len(step) == 1:
            return
        who = step.get("from", "")
        if who == "relay-stdout":
            line = (
                step["line"].replace("<HOST>", "127.0.0.1").replace("<PORT>", str(self.relay.port))
            )
            assert line in self.relay.stdout_lines
        elif who == "relay-process":
            assert self.relay.alive() == step["alive"]
        elif who.startswith("client-"):
            await self.client_step(who.removeprefix("client-"), step)
        elif who.startswith("relay→"):
            await self.relay_step(who.removeprefix("relay→"), step)
        else:
            raise AssertionError(f"unsupported step {step}")

    async def client_step(self, name: str, step: Step) -> None:
        event = step.get("event")
        if event == "ws_connect":
            await self.connect(name, step)
        elif event == "http_request":
            body = step.get("body", "").encode() or None
            self.pending_http = http_request(self.relay.port, step["method"], step["path"], body)
        elif event == "tcp_abort_without_close_frame":
            self.clients[name].ws.transport.abort()
            self.closing.add(name)
        elif step.get("opcode") == "close":
            self.closing.add(name)
            await self.clients[name].ws.close(step["close_code"], step.get("close_reason", ""))
        elif step.get("opcode") == "ping":
            self.pings[name] = await self.clients[name].ws.ping(bytes.fromhex(step["payload_hex"]))
        elif step.get("opcode") == "continuation":
            pass  # sent together with the first fragment
        else:
            await self.send(name, step)

    async def connect(self, name: str, step: Step) -> None:
        headers = {k: placeholder_ip(v) for k, v in step.get("headers", {}).items()}
        if self.client_ip and not headers:
            headers["X-Forwarded-For"] = self.client_ip
        try:
            ws = await connect(
                f"ws://127.0.0.1:{self.relay.port}{step['path']}",
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=RECV_DEADLINE,
                close_timeout=1,
                additional_headers=headers,
            )
        except InvalidStatus as exc:
            response = exc.response
            self.pending_http = (
                response.status_code,
                response.reason_phrase,
                {k.lower(): v for k, v in response.headers.raw_items()},
                response.body,
            )
            return
        self.clients[name] = Client(ws)
        self.pending_http = (101, "Switching Protocols", {}, b"")

    def outgoing_text(self, name: str, step: Step) -> str | bytes:
        if "raw_hex" in step:
            return bytes.fromhex(step["raw_hex"])
        if step.get("not_json"):
            return str(step.get("raw", step["frame"]))
        frame = copy.deepcopy(step["frame"])
        if isinstance(frame, dict) and frame.get("type") in (
            "agent",
            "shell",
            "agent_challenge_response",
        ):
            return json.dumps(
                self.translate(name, frame), separators=(",", ":"), ensure_ascii=False
            )
        if "raw" in step:
            return str(step["raw"])
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)

    async def send(self, name: str, step: Step) -> None:
        client = self.clients[name]
        message = self.outgoing_text(name, step)
        if isinstance(message, str):
            message = self.rename(message)
        if step.get("fin") is False:
            continuation = self.steps[self.steps.index(step) + 1]
            await client.ws.send([str(message), continuation["raw"]])
            return
        binary = step.get("opcode") == "binary"
        if isinstance(message, bytes):
            await client.ws.send(message, text=not binary)
        elif binary:
            await client.ws.send(message.encode())
        else:
            for _ in range(step.get("repeat", 1)):
                await client.ws.send(message)

    # ------------------------------------------------------------------ agent translation

    def translate(self, name: str, frame: dict[str, Any]) -> dict[str, Any]:
        state = self.agent_state.setdefault(name, _AgentState())
        if frame["type"] == "agent":
            state.recorded_key = frame.get("publicKey")
            frame["deviceId"] = self.agents.device_id(frame.get("deviceId"))
            frame["publicKey"] = self.agents.public_key(frame.get("publicKey"))
        elif frame["type"] == "shell":
            frame["targetDeviceId"] = self.agents.device_id(frame.get("targetDeviceId"))
            frame["targetPublicKey"] = self.agents.public_key(frame.get("targetPublicKey"))
        elif "sig" in frame:
            frame["sig"] = self.resign(state, frame["sig"])
        return frame

    def resign(self, state: _AgentState, recorded: Any) -> Any:
        """A signature over our challenge with the recorded signature's kind of validity."""
        ours = self.agents.ours(state.recorded_key)
        recorded_key = _decode_key(state.recorded_key)
        if not isinstance(recorded, str) or ours is None or recorded_key is None:
            return recorded
        try:
            raw = b64decode(recorded)
        except B64Error:
            return recorded
        if not state.recorded_challenges or not state.our_challenges:
            return recorded
        for recorded_challenge, our_challenge in zip(
            reversed(state.recorded_challenges), reversed(state.our_challenges), strict=False
        ):
            message, our_message = recorded_challenge.encode(), our_challenge.encode()
            if len(raw) == 64 and verify(recorded_key, raw, message):
                return _encode_like(ours.sign(our_message), recorded)
            if len(raw) == 64 and verify(recorded_key, normalize_low_s(raw), message):
                signature = ours.sign(our_message)
                s = CURVE_ORDER - int.from_bytes(signature[32:], "big")
                return _encode_like(signature[:32] + s.to_bytes(32, "big"), recorded)
            if _is_der_signature(raw, recorded_key, message):
                return _encode_like(_der(ours.sign(our_message)), recorded)
            if len(raw) == 63:
                return _encode_like(ours.sign(our_message)[:63], recorded)
        # Signed by some other key.
        return _encode_like(PrivateKey.generate().sign(state.our_challenges[-1].encode()), recorded)

    # ------------------------------------------------------------------ relay steps

    async def relay_step(self, name: str, step: Step) -> None:
        if step.get("event") == "http_response":
            await self.check_http(step)
        elif step.get("event") in ("tcp_closed", "tcp_closed_without_close_frame"):
            await asyncio.wait_for(self.clients[name].ws.wait_closed(), RECV_DEADLINE)
        elif "none_within_ms" in step:
            await self.silence(name)
        elif step.get("opcode") == "close":
            code, reason = await self.clients[name].closed()
            assert code == step["close_code"], (code, reason)
            if code not in _REASON_NOT_COMPARED:
                assert reason == step["close_reason"], (code, reason)
            self.closing.add(name)
        elif step.get("opcode") == "pong":
            await asyncio.wait_for(self.pings.pop(name), RECV_DEADLINE)
        elif step.get("opcode") == "text":
            await self.check_frame(name, step)
        else:
            raise AssertionError(f"unsupported relay step {step}")

    async def check_frame(self, name: str, step: Step) -> None:
        received = await self.clients[name].recv()
        expected_frame = step["frame"]
        if isinstance(expected_frame, dict) and expected_frame.get("type") == "agent_challenge":
            frame = json.loads(received)
            assert list(frame) == ["type", "challenge"] and frame["type"] == "agent_challenge"
            assert _UUID4.fullmatch(frame["challenge"]), frame
            state = self.agent_state.setdefault(name, _AgentState())
            state.recorded_challenges.append(expected_frame["challenge"])
            state.our_challenges.append(frame["challenge"])
            return
        expected = self.rename(step.get("raw", dumps(expected_frame)))
        assert received == expected, f"received {received[:200]!r}, expected {expected[:200]!r}"

    async def check_http(self, step: Step) -> None:
        status, reason, headers, body = self.pending_http
        expected_status = step["status_line"].split(" ", 2)
        assert (status, reason) == (int(expected_status[1]), expected_status[2])
        if status == 101:
            return
        expected_headers = {k.lower(): v for k, v in step["headers"]}
        assert headers.get("content-type") == expected_headers.get("content-type")
        assert body.decode() == step.get("body", "")
        if "content-length" in expected_headers:
            assert headers.get("content-length") == expected_headers["content-length"]

    async def silence(self, name: str) -> None:
        for other, client in self.clients.items():
            if other != name and other not in self.closing:
                await client.sync()
        if name not in self.closing:
            await self.clients[name].sync()
