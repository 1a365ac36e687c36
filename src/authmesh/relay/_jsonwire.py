"""JSON exactly as the reference relay reads and writes it (``JSON.parse``/``JSON.stringify``).

Numbers are doubles (``1.50e1`` is re-emitted as ``15``), ``NaN``/``Infinity`` literals are
rejected, output is compact with non-ASCII characters left raw, and lone surrogates are
escaped the way a well-formed ``JSON.stringify`` does, so every frame is valid UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["JsonWireError", "dump_string", "dumps", "format_number", "loads"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Built once: json.loads/json.dumps with options build a new decoder/encoder on every call.
_encode_string = json.encoder.encode_basestring  # raw non-ASCII, like ensure_ascii=False


class JsonWireError(ValueError):
    """The text is not a JSON document ``JSON.parse`` would accept."""


def _reject_constant(name: str) -> Any:
    raise JsonWireError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_int=float, parse_float=float, parse_constant=_reject_constant)
# JSONDecoder.decode without its two whitespace regex scans, which cost a quarter of parsing a
# 1 KiB frame (every relayed frame is parsed); only a document that has whitespace around it
# pays for stripping it.
_raw_decode = _DECODER.raw_decode
_WHITESPACE = " \t\n\r"  # JSON's four


def loads(text: str) -> Any:
    """Parse like ``JSON.parse``: every number becomes a float, NaN/Infinity are errors."""
    try:
        start = 0 if text[:1] not in _WHITESPACE else len(text) - len(text.lstrip(_WHITESPACE))
        value, end = _raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise JsonWireError("frame is not valid JSON") from exc
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise JsonWireError("frame is not valid JSON (text after the document)")
    return value


def format_number(value: float) -> str:
    """ECMAScript ``Number::toString`` of a double (shortest round-trip digits)."""
    if not math.isfinite(value):
        return "null"  # JSON.stringify(Infinity) === "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def dump_string(text: str) -> str:
    """One string as ``JSON.stringify`` writes it (quoted, lone surrogates escaped)."""
    encoded = _encode_string(text)
    if text.isascii():
        return encoded
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)


def _dump(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(dump_string(value))
    elif isinstance(value, int | float):
        out.append(format_number(float(value)))
    else:
        _dump_container(value, out)


def _dump_container(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(dump_string(key))
            out.append(":")
            _dump(item, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _dump(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> str:
    """Serialise like ``JSON.stringify``: compact, raw non-ASCII, JS number formatting."""
    out: list[str] = []
    _dump(value, out)
    return "".join(out)
