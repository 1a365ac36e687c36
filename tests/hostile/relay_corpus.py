"""Bad frames for the relay, generated deterministically from the message types of the spec.

Every client→relay message type (spec ``relay.md`` §3.1, plus ``agent_session``) is sent with
each field removed, replaced by a value of every wrong type, oversized, and as the wrong
message for the moment (every template goes to sockets in every state, so order varies);
around them come frames that are not JSON objects at all. :func:`mutated` adds seeded byte
mutations of those frames for larger campaigns. A frame is ``(text, data)``: ``text`` True
for a text frame (``data`` may then be invalid UTF-8), False for a binary frame.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

__all__ = ["Frame", "base_frames", "mutated"]

Frame = tuple[bool, bytes]

# Just under and just over the relay's 65,536-byte message limit (spec §2.2).
_NEAR_LIMIT = 65_000
_OVER_LIMIT = 65_537

_TEMPLATES: dict[str, dict[str, object]] = {
    "listen": {"otc": "482916", "protocol": 2},
    "connect": {"otc": "482916", "protocol": 2},
    "data": {"payload": "aGVsbG8"},
    "done": {},
    "ping": {},
    "bootstrap_watch": {"jti": "jti-1"},
    "bootstrap_init": {
        "jti": "jti-1",
        "token": "tok",
        "targetPubKey": "A" * 44,
        "targetSig": "S",
        "protocol": 2,
    },
    "bootstrap_ack": {"jti": "jti-1", "publicKey": "P", "controllerSig": "S"},
    "bootstrap_reject": {"jti": "jti-1", "publicKey": "P", "error": "no"},
    "agent": {"deviceId": "am_0123456789abcdef", "publicKey": "A" * 44, "protocol": 2},
    "agent_challenge_response": {"sig": "A" * 86},
    "shell": {"targetDeviceId": "am_0123456789abcdef", "targetPublicKey": "A" * 44},
    "agent_session": {"session": "00000000-0000-4000-8000-000000000000"},
}
# Frames only the relay sends, and near-misses of real type names.
_FOREIGN_TYPES = [
    "ack",
    "peer_found",
    "error",
    "pong",
    "shell_request",
    "agent_challenge",
    "agent_registered",
    "bootstrap_watching",
    "LISTEN",
    " listen",
    "listen\u0000",
    "listеn",  # Cyrillic e
    "__proto__",
    "constructor",
    "",
]
_WRONG_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e308,
    123456,
    "",
    " ",
    "x",
    "\u0000",
    "\ud800",
    "٤٨٢٩١٦",  # Arabic-Indic digits: str.isdigit() but not ASCII
    "482916\n",
    " 482916",
    "４８２９１６",  # fullwidth digits
    "../../etc/passwd",
    "%00",
    "😀" * 40,
    [],
    ["482916"],
    {},
    {"otc": "482916"},
    [[[[[]]]]],
]
_OVERSIZED = ["x" * 4_096, "y" * _NEAR_LIMIT, "z" * _OVER_LIMIT]


def _text(value: object) -> Frame:
    return True, json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _raw_frames() -> Iterator[Frame]:
    """Frames that are not one JSON object, or not valid JSON at all."""
    for text in [
        "",
        " ",
        "not json",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1e999",
        '"listen"',
        "[]",
        '[{"type":"ping"}]',
        "{}",
        '{"type":null}',
        '{"type":"ping"',
        '{"type":"ping"}}',
        '{"type":"ping"} {"type":"ping"}',
        '\ufeff{"type":"ping"}',
        '{"type":"ping","x":NaN}',
        '{"type":"ping","x":Infinity}',
        '{"type":"ping","x":-Infinity}',
        '{"type":"listen","type":"ping"}',
        '{"type":"ping","type":"listen","otc":"000001"}',
        '{"type":"ping","x":1' + "0" * 400 + "}",
        '{"type":"data","payload":"\\ud800\\udc00\\udfff"}',
        '{"type":"data","payload":' + "[" * 2_000 + "]" * 2_000 + "}",
        "[" * 30_000,
        "[" * 30_000 + "]" * 30_000,
        "{" * 30_000,
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        '{"type":"' + "x" * _NEAR_LIMIT + '"}',
        "1" * _NEAR_LIMIT,
        " " * _NEAR_LIMIT + "{}",
        "x" * _OVER_LIMIT,
    ]:
        yield True, text.encode("utf-8")
    for data in [
        b"\xff",
        b"\xc0\xaf",
        b'{"type":"ping","x":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"type":"listen","otc":"48291\xff"}',
        b"\xfe\xff" * 1_000,
    ]:
        yield True, data  # invalid UTF-8 in a text frame: close 1007
        yield False, data  # the same bytes as a binary frame: decoded with replacement
    for data in [b"", b'{"type":"ping"}', b'{"type":"listen","otc":"135791"}', bytes(range(256))]:
        yield False, data


def _field_variants(kind: str, fields: dict[str, object]) -> Iterator[Frame]:
    yield _text({"type": kind, **fields})
    for name in fields:
        rest = {k: v for k, v in fields.items() if k != name}
        yield _text({"type": kind, **rest})
        for value in [*_WRONG_VALUES, *_OVERSIZED]:
            yield _text({"type": kind, **rest, name: value})
    for value in [*_WRONG_VALUES, *_OVERSIZED]:
        yield _text({"type": kind, **fields, "extra": value})
    yield _text({**fields, "type": kind})  # type last
    yield _text({"type": kind, **{name: value for name, value in reversed(fields.items())}})


def base_frames() -> list[Frame]:
    """The fixed corpus: every frame once, in a stable order, duplicates removed."""
    frames: list[Frame] = [*_raw_frames()]
    for kind, fields in _TEMPLATES.items():
        frames.extend(_field_variants(kind, fields))
    for kind in _FOREIGN_TYPES:
        frames.append(_text({"type": kind, "otc": "482916"}))
    for value in _WRONG_VALUES:
        frames.append(_text({"type": value}))
    return list(dict.fromkeys(frames))


def mutated(frames: list[Frame], count: int, seed: int) -> list[Frame]:
    """``count`` seeded byte-level mutations of ``frames``: flips, cuts, splices, repeats."""
    rng = random.Random(seed)
    small = [f for f in frames if len(f[1]) < 2_048]
    out: list[Frame] = []
    while len(out) < count:
        text, data = rng.choice(small)
        buffer = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            operation = rng.randrange(5)
            position = rng.randrange(len(buffer) + 1)
            if operation == 0 and buffer:
                buffer[min(position, len(buffer) - 1)] = rng.randrange(256)
            elif operation == 1:
                del buffer[position : position + rng.randint(1, 8)]
            elif operation == 2:
                buffer[position:position] = rng.choice(small)[1][: rng.randint(1, 32)]
            elif operation == 3:
                buffer[position:position] = bytes(rng.choice(b'{}[]",:\\0') for _ in range(3))
            else:
                piece = buffer[position : position + rng.randint(1, 16)]
                buffer[position:position] = piece * rng.randint(2, 50)
        out.append((text, bytes(buffer)))
    return out
