"""Reading and rewriting pairing ``data`` frames in the state-machine tests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authmesh.pairing import PairingError

Frame = dict[str, Any]


def body(frame: Frame) -> dict[str, Any]:
    """The JSON object inside a ``data`` frame's payload."""
    decoded: dict[str, Any] = json.loads(frame["payload"])
    return decoded


def with_body(frame: Frame, **changes: Any) -> Frame:
    """``frame`` with some payload fields replaced, as a relay could rewrite it."""
    return {"type": "data", "payload": json.dumps({**body(frame), **changes})}


def raises(code: str, call: Any, *args: Any) -> None:
    """``call(*args)`` fails with the pairing error ``code``."""
    with pytest.raises(PairingError) as raised:
        call(*args)
    assert raised.value.code == code
