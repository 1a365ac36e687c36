"""Properties of the header grammar, the canonical string and strict base64."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._canonical import (
    CanonicalError,
    body_sha256,
    canonical_string,
    request_target_path,
    sort_query,
)
from authmesh.core._header import FIELD_CAPS, AuthHeader, HeaderError, parse_header

# Any character but the double quote (which ends a value); includes astral ones,
# which count twice against the caps.
value_chars = st.characters(blacklist_characters='"', blacklist_categories=["Cs"])


def field_value(key: str) -> st.SearchStrategy[str]:
    # Astral characters take two UTF-16 units: halve the cap to stay within it.
    return st.text(value_chars, min_size=1, max_size=FIELD_CAPS[key] // 2)


headers = st.builds(
    AuthHeader,
    v=field_value("v"),
    id=field_value("id"),
    ts=field_value("ts"),
    nonce=field_value("nonce"),
    sig=field_value("sig"),
)


@given(headers)
def test_format_then_parse_round_trips(header: AuthHeader) -> None:
    assert parse_header(header.format()) == header


@given(headers, st.sampled_from(sorted(FIELD_CAPS)))
def test_pair_order_does_not_matter(header: AuthHeader, first: str) -> None:
    fields = dataclasses.asdict(header)
    order = [first] + [key for key in fields if key != first]
    text = "AuthMesh " + ",".join(f'{key}="{fields[key]}"' for key in order)
    assert parse_header(text) == header


valid = AuthHeader(
    v="1",
    id="Ax4Cqh/TkvTeCIPLxOjL7RCI6+N6DCOnVhf2nYMt62hB",
    ts="1743160800",
    nonce="q83vEjRWeJCrze8SNFZ4kA",
    sig="lK4iMC3FpzKQSprEW2KQRjCtrklZSjNcEXOuKBXWzOJ1fhkWAmHmMKG8XhP6_GiMroXXjbtRVb9U3pmttHK-1A",
)
VALID_TEXT = valid.format()
word_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
unknown_keys = st.text(word_chars, min_size=1, max_size=12).filter(
    lambda key: key not in FIELD_CAPS
)


@st.composite
def mutated_headers(draw: st.DrawFn) -> tuple[str, str]:
    """A valid header broken in one way, with the reason the parser must give."""
    key = draw(st.sampled_from(sorted(FIELD_CAPS)))
    value = getattr(valid, key)
    kind = draw(
        st.sampled_from(["duplicate", "unknown", "too_long", "empty", "drop", "scheme", "length"])
    )
    if kind == "duplicate":
        return VALID_TEXT + f',{key}="{value}"', "duplicate_key"
    if kind == "unknown":
        return VALID_TEXT + f',{draw(unknown_keys)}="x"', "unknown_key"
    if kind == "too_long":
        long_value = "a" * (FIELD_CAPS[key] + draw(st.integers(1, 50)))
        return VALID_TEXT.replace(f'{key}="{value}"', f'{key}="{long_value}"'), "field_too_long"
    if kind == "empty":
        return VALID_TEXT.replace(f'{key}="{value}"', f'{key}=""'), "missing_field"
    if kind == "drop":
        return VALID_TEXT.replace(f'{key}="{value}"', ""), "missing_field"
    if kind == "scheme":
        scheme = draw(st.sampled_from(["authmesh ", "AUTHMESH ", "AuthMesh\t", "Bearer ", " "]))
        return scheme + VALID_TEXT.removeprefix("AuthMesh "), "wrong_scheme"
    padding = " " * (1025 - len(VALID_TEXT) + draw(st.integers(0, 100)))
    return VALID_TEXT + padding, "header_too_long"


@given(mutated_headers())
def test_mutated_headers_are_refused(case: tuple[str, str]) -> None:
    text, reason = case
    with pytest.raises(HeaderError) as caught:
        parse_header(text)
    assert caught.value.reason == reason


@given(st.one_of(st.none(), st.text(max_size=300)))
def test_parser_raises_only_its_own_error(text: str | None) -> None:
    with contextlib.suppress(HeaderError):
        parse_header(text)


path_text = st.text(st.characters(blacklist_characters="\n#"), max_size=60)
query_pair = st.tuples(
    st.text(st.characters(blacklist_characters="&=\n#"), max_size=8),
    st.text(st.characters(blacklist_characters="&\n#"), max_size=8),
)


@given(
    st.text(st.characters(blacklist_characters="\n"), min_size=1, max_size=10),
    path_text,
    st.text(st.characters(blacklist_characters="\n"), max_size=16),
    st.text(st.characters(blacklist_characters="\n"), max_size=64),
    st.binary(max_size=64),
)
def test_canonical_string_is_deterministic(
    method: str, path: str, ts: str, nonce: str, body: bytes
) -> None:
    first = canonical_string(method, path, ts, nonce, body_sha256(body))
    assert first == canonical_string(method, path, ts, nonce, body_sha256(body))
    assert first.count("\n") == 5
    assert first.startswith("AMv1\n" + method.upper() + "\n")
    v2 = canonical_string(method, path, ts, nonce, body_sha256(body), version="2", authority="h")
    assert v2.startswith("AMv2\n") and v2 != first


@given(st.lists(query_pair, max_size=8, unique_by=lambda pair: pair[0]), st.randoms())
def test_query_order_is_irrelevant_for_distinct_names(
    pairs: list[tuple[str, str]], random: object
) -> None:
    shuffled = list(pairs)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    original = "/p?" + "&".join(f"{name}={value}" for name, value in pairs)
    reordered = "/p?" + "&".join(f"{name}={value}" for name, value in shuffled)
    assert sort_query(original) == sort_query(reordered)


@given(path_text)
@example("A:")
def test_normalisation_is_idempotent(path: str) -> None:
    once = sort_query(path)
    assert sort_query(once) == once
    try:
        target = request_target_path(path)
    except CanonicalError:
        # Only absolute-form targets are refused: another scheme than http(s), or a bad
        # host or port; the verifier answers those 400 malformed_request.
        assert ":" in path
        return
    assert request_target_path(target) == target


@pytest.mark.parametrize("target", ["A:", "mailto:x", "ftp://h/p", "http://h:99999/p"])
def test_absolute_targets_other_than_http_are_refused(target: str) -> None:
    with pytest.raises(CanonicalError):
        request_target_path(target)


@given(st.sampled_from(["method", "path", "ts", "nonce"]), st.text(max_size=5))
def test_newlines_are_refused_in_every_field(field: str, text: str) -> None:
    fields = {"method": "GET", "path": "/x", "ts": "1", "nonce": "n"}
    fields[field] = text + "\n" + text
    with pytest.raises(CanonicalError):
        canonical_string(
            fields["method"], fields["path"], fields["ts"], fields["nonce"], body_sha256(b"")
        )


@given(st.binary(max_size=100))
def test_base64_accepts_both_alphabets_padded_or_not(data: bytes) -> None:
    standard = b64encode(data)
    assert b64decode(standard) == data
    assert b64decode(standard.rstrip("=")) == data
    assert b64decode(b64url_encode(data)) == data


@settings(max_examples=200)
@given(
    st.binary(min_size=3, max_size=60),
    st.sampled_from([" ", "\t", "\n", "!", "*", "=", "."]),
    st.data(),
)
def test_base64_refuses_whitespace_junk_and_inner_padding(
    data: bytes, junk: str, draw: st.DataObject
) -> None:
    text = b64url_encode(data)
    position = draw.draw(st.integers(1, len(text) - 1))
    with pytest.raises(B64Error):
        b64decode(text[:position] + junk + text[position:])


@given(st.binary(max_size=60), st.sampled_from("ABCD"))
def test_base64_refuses_impossible_lengths(data: bytes, extra: str) -> None:
    text = b64url_encode(data)
    text += extra * ((1 - len(text)) % 4)
    assert len(text) % 4 == 1
    with pytest.raises(B64Error):
        b64decode(text)
