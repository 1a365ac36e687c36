"""Property tests for the JavaScript-compatible JSON serialisers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authmesh.core import _jsoncanon as jsoncanon

SAFE_INTEGER = 2**53
# Keys JavaScript does not reorder (array-index keys move to the front).
plain_keys = st.text(max_size=8).filter(lambda k: not k.isdigit())
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
no_surrogates = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INTEGER, SAFE_INTEGER)
    | finite_floats
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def as_doubles(value: Any) -> Any:
    """What a JavaScript reader sees: every number a double, -0 equal to 0."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value) + 0.0
    if isinstance(value, list):
        return [as_doubles(item) for item in value]
    return {key: as_doubles(item) for key, item in value.items()}


@given(json_values)
def test_stable_form_round_trips(value: Any) -> None:
    text = jsoncanon.stable_stringify(value)
    assert as_doubles(json.loads(text)) == as_doubles(value)
    assert as_doubles(jsoncanon.parse(jsoncanon.pretty_stringify(value))) == as_doubles(value)


@given(json_values)
def test_stable_form_sorts_keys_by_utf16_and_has_no_whitespace_outside_strings(
    value: Any,
) -> None:
    text = jsoncanon.stable_stringify(value)

    def check_order(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert keys == sorted(keys, key=jsoncanon.utf16_sort_key)
        return dict(pairs)

    json.loads(text, object_pairs_hook=check_order)
    assert jsoncanon.stable_stringify(jsoncanon.parse(text)) == text


@given(st.dictionaries(plain_keys, st.integers(-SAFE_INTEGER, SAFE_INTEGER) | no_surrogates))
def test_pretty_form_equals_python_indent_two(value: dict[str, Any]) -> None:
    expected = json.dumps(value, indent=2, ensure_ascii=False)
    assert jsoncanon.pretty_stringify(value) == expected
    assert jsoncanon.legacy_stringify(value) == json.dumps(
        value, separators=(",", ":"), ensure_ascii=False
    )


@given(no_surrogates)
def test_quote_equals_python_for_text_without_surrogates(text: str) -> None:
    assert jsoncanon.quote(text) == json.dumps(text, ensure_ascii=False)


@given(st.text())
def test_quote_round_trips_lone_surrogates_as_lowercase_escapes(text: str) -> None:
    quoted = jsoncanon.quote(text)
    quoted.encode("utf-8")  # never raises: lone surrogates are escaped
    joined = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")
    assert json.loads(quoted) == joined
    assert "\\uD" not in quoted


@given(finite_floats)
def test_numbers_round_trip_and_use_exponents_only_outside_the_plain_range(number: float) -> None:
    text = jsoncanon.format_number(number)
    assert float(text) == number
    magnitude = abs(number)
    plain = magnitude == 0 or 1e-6 <= magnitude < 1e21
    assert ("e" in text) == (not plain)
    if number == int(number) and plain:
        assert "." not in text
    assert len(text.lstrip("-").replace(".", "").split("e")[0].strip("0")) <= 17


@given(st.lists(plain_keys | st.integers(0, 2**33).map(str), unique=True))
def test_js_property_order_puts_array_indices_first(keys: list[str]) -> None:
    ordered = jsoncanon.js_property_order(keys)
    indices = [k for k in keys if k.isdigit() and str(int(k)) == k and int(k) < 2**32 - 1]
    assert ordered == sorted(indices, key=int) + [k for k in keys if k not in indices]


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (5e-7, "5e-7"),
        (1e-6, "0.000001"),
        (-0.0, "0"),
        (123.456, "123.456"),
        (-1.5e-10, "-1.5e-10"),
        (2**53 + 1, "9007199254740992"),
        (10**400, "null"),
        (math.inf, "null"),
    ],
)
def test_known_numbers(number: float, text: str) -> None:
    assert jsoncanon.format_number(number) == text


def test_nan_and_excess_depth_are_rejected() -> None:
    with pytest.raises(jsoncanon.JsonError):
        jsoncanon.parse("[NaN]")
    nested: Any = []
    for _ in range(jsoncanon.MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(jsoncanon.JsonError, match="max depth"):
        jsoncanon.stable_stringify(nested)
