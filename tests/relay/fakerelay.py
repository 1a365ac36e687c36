"""Drive :class:`RelayCore` directly: numbered sockets from chosen addresses, a fake clock.

The core is transport-free, so its rules are tested here without processes, sockets or
waiting; ``tests/relay/test_core_*.py`` use this driver.
"""

from __future__ import annotations

import json
from typing import Any

from authmesh.core._b64 import b64url_encode
from authmesh.core._keys import PrivateKey
from authmesh.core.shell._challenge import ChallengeScheme, challenge_message
from authmesh.relay._config import RelayConfig
from authmesh.relay._protocol import Close, RelayCore, Send

__all__ = ["ACK", "PEER_FOUND", "FakeRelay", "error"]

ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}


def error(code: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, **extra}


class FakeRelay:
    """A core with numbered sockets, each opened from a chosen address, and a fake clock.

    Every frame the core sends is kept per socket (:attr:`frames`), every close with its code
    and reason (:attr:`closed`).
    """

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.core = RelayCore(config or RelayConfig())
        self.now = 0.0
        self._next = 0
        self.frames: dict[int, list[dict[str, Any]]] = {}
        self.texts: dict[int, list[str]] = {}
        self.closed: dict[int, tuple[int, str]] = {}

    def open(self, ip: str = "192.0.2.1") -> int:
        self._next += 1
        self.frames[self._next] = []
        self.texts[self._next] = []
        self._apply(self.core.open(self._next, ip, self.now))
        return self._next

    def send_raw(self, conn: int, text: str | bytes) -> list[dict[str, Any]]:
        """Send one frame as is; the frames ``conn`` itself received in answer."""
        before = len(self.frames[conn])
        self._apply(self.core.receive(conn, text, self.now))
        return self.frames[conn][before:]

    def send(self, conn: int, **message: Any) -> list[dict[str, Any]]:
        """Send one message, serialised compactly as clients do."""
        return self.send_raw(conn, json.dumps(message, separators=(",", ":")))

    def close(self, conn: int) -> None:
        self._apply(self.core.close(conn, self.now))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self._apply(self.core.tick(self.now))

    def paired(self, otc: str, ip: str = "192.0.2.1", **extra: Any) -> tuple[int, int]:
        """A target and a controller (from ``ip``) paired on ``otc``."""
        target, controller = self.open(ip), self.open(ip)
        assert self.send(target, type="listen", otc=otc, **extra) == [ACK]
        [found] = self.send(controller, type="connect", otc=otc, **extra)
        assert found["type"] == "peer_found" and self.frames[target][-1] == found
        return target, controller

    def register_agent(
        self, key: PrivateKey, ip: str = "192.0.2.200", *, protocol: int = 1, **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """An agent socket that answered its challenge; the relay's last answer."""
        agent = self.open(ip)
        hello = {"deviceId": key.device_id, "publicKey": key.public_key_b64, **fields}
        if protocol == 2:
            hello["protocol"] = 2
        [challenge] = self.send(agent, type="agent", **hello)
        scheme = ChallengeScheme.V2 if protocol == 2 else ChallengeScheme.V1
        signed = challenge_message(challenge["challenge"], scheme, agent_device_id=key.device_id)
        signature = b64url_encode(key.sign(signed))
        [answer] = self.send(agent, type="agent_challenge_response", sig=signature)
        return agent, answer

    def _apply(self, actions: list[Send | Close]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.texts[action.conn].append(action.text)
                self.frames[action.conn].append(json.loads(action.text))
            else:
                self.closed[action.conn] = (action.code, action.reason)
