"""JSON text exactly as the reference's JavaScript produces it.

The allow-list seal is an HMAC over ``stableStringify`` (sorted keys, no whitespace) and
the files are written with ``JSON.stringify(value, null, 2)``; both must match the
reference byte for byte. Python's :mod:`json` differs in number formatting (``1e-07``
vs ``1e-7``), key order (code points vs UTF-16 code units, and JavaScript's
integer-like-keys-first property order) and lone-surrogate handling, so this module
re-implements the three JavaScript serialisations on top of :func:`json.loads`.

Values are what :func:`parse` returns: ``None``, ``bool``, ``int``, ``float``, ``str``,
``list`` and ``dict`` with ``str`` keys.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

__all__ = [
    "MAX_DEPTH",
    "JsonError",
    "JsonValue",
    "format_number",
    "js_property_order",
    "legacy_stringify",
    "parse",
    "pretty_stringify",
    "quote",
    "stable_stringify",
    "utf16_sort_key",
]

JsonValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None

MAX_DEPTH = 32
"""Nesting depth beyond which ``stableStringify`` throws in the reference."""

# Canonical array index: "0" or no leading zero, below 2**32 - 1 (ECMAScript).
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")
_MAX_ARRAY_INDEX = 2**32 - 2
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# Files we write nest a few levels; this only stops runaway recursion.
_WRITE_DEPTH = 512


class JsonError(ValueError):
    """The text is not JSON that JavaScript's ``JSON.parse`` accepts, or nests too deep."""


def _reject_constant(name: str) -> None:
    raise JsonError(f"{name} is not valid JSON")


def parse(text: str) -> JsonValue:
    """Parse JSON like ``JSON.parse``: duplicate keys keep the last value at the first position.

    ``NaN``/``Infinity`` are rejected (Python accepts them, JavaScript does not).
    Integers stay ``int``; serialisers format every number as a double.
    """
    try:
        value: JsonValue = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JsonError(f"invalid JSON: {exc}") from exc
    return value


def utf16_sort_key(text: str) -> bytes:
    """Sort key matching JavaScript's default string sort (UTF-16 code units)."""
    return text.encode("utf-16-be", "surrogatepass")


def js_property_order(keys: Iterable[str]) -> list[str]:
    """Keys in JavaScript property order: array-index keys ascending, then insertion order."""
    indices: list[str] = []
    others: list[str] = []
    for key in keys:
        if _ARRAY_INDEX.fullmatch(key) and int(key) <= _MAX_ARRAY_INDEX:
            indices.append(key)
        else:
            others.append(key)
    indices.sort(key=int)
    return indices + others


def _sorted_utf16(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=utf16_sort_key)


def format_number(number: int | float) -> str:
    """ECMAScript ``Number::toString`` of the value as a double, as ``JSON.stringify`` emits it.

    Non-finite values (including integers too large for a double) become ``null``.
    """
    try:
        value = float(number)
    except OverflowError:
        return "null"
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest round-tripping digits, as ECMAScript requires.
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # Decimal point position n such that value = 0.digits * 10**n.
    point = len(whole) + (int(exponent_text) if exponent_text else 0)
    point -= len(whole + fraction) - len((whole + fraction).lstrip("0"))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        exponent = point - 1
        exponent_sign = "+" if exponent >= 0 else "-"
        head = digits[0] + ("." + digits[1:] if count > 1 else "")
        text = f"{head}e{exponent_sign}{abs(exponent)}"
    return sign + text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def quote(text: str) -> str:
    """``JSON.stringify`` of a string: only ``"``, ``\\``, C0 controls and lone surrogates escaped.

    A high/low surrogate pair held as two Python code points is one astral character
    in JavaScript, so it is joined first and emitted raw.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    if any("\ud800" <= char <= "\udfff" for char in text):
        text = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


KeyOrder = Callable[[Iterable[str]], list[str]]


def _serialise(value: object, order: KeyOrder, indent: str, level: int, limit: int) -> str:
    if level > limit:
        raise JsonError("stableStringify: max depth exceeded")
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list):
        items = [_serialise(item, order, indent, level + 1, limit) for item in value]
        return _wrap("[", "]", items, indent, level)
    if isinstance(value, dict):
        members = []
        separator = ": " if indent else ":"
        for key in order(value.keys()):
            rendered = _serialise(value[key], order, indent, level + 1, limit)
            members.append(quote(key) + separator + rendered)
        return _wrap("{", "}", members, indent, level)
    raise JsonError(f"cannot serialise a {type(value).__name__} as JSON")


def _wrap(opening: str, closing: str, items: list[str], indent: str, level: int) -> str:
    if not items:
        return opening + closing
    if not indent:
        return opening + ",".join(items) + closing
    inner = "\n" + indent * (level + 1)
    return opening + inner + ("," + inner).join(items) + "\n" + indent * level + closing


def stable_stringify(value: JsonValue) -> str:
    """The reference ``stableStringify``: keys sorted by UTF-16 code units, no whitespace.

    Raises :class:`JsonError` when nesting exceeds :data:`MAX_DEPTH`.
    """
    return _serialise(value, _sorted_utf16, "", 0, MAX_DEPTH)


def legacy_stringify(value: JsonValue) -> str:
    """Plain ``JSON.stringify(value)``: JavaScript property order, no whitespace."""
    return _serialise(value, js_property_order, "", 0, _WRITE_DEPTH)


def pretty_stringify(value: JsonValue) -> str:
    """``JSON.stringify(value, null, 2)``: how the reference writes every JSON file."""
    return _serialise(value, js_property_order, "  ", 0, _WRITE_DEPTH)
