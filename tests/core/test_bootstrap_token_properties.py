"""Property tests: bootstrap-token validation only ever refuses with its own coded error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from authmesh.core._b64 import b64url_encode
from authmesh.core._bootstrap_token import (
    MAX_TTL_SECONDS,
    TOKEN_PREFIX,
    BootstrapTokenError,
    mint_token,
    validate_token,
)
from authmesh.core._keys import PrivateKey

NOW = 1_775_476_800
SIGNER = PrivateKey.from_scalar(
    bytes.fromhex("b0c3c61ffb809cf245f24b6bea3eccd3f5a9c28bec1e5e50f888b6959111f4b2")
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["amesh-bootstrap", "1", "ES256", "peer:add"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
claim_names = st.sampled_from(
    ["typ", "ver", "alg", "scope", "single_use", "iat", "exp", "pub", "jti"]
)
claims = st.dictionaries(claim_names | st.text(max_size=6), json_values, max_size=8)
keys = st.binary(max_size=70) | st.just(SIGNER.public_key)


def _outcome(token: object, key: bytes, now: float) -> str:
    try:
        validate_token(token, key, now=now)
    except BootstrapTokenError as error:
        assert isinstance(error.code, str) and str(error)
        return error.code
    return "ok"


def _segment(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, separators=(",", ":"))
    return b64url_encode(text.encode("utf-8"))


@given(st.text(max_size=200), keys, st.floats(allow_nan=False))
@example("amesh-bt-v1.." + ".", b"", 0.0)
@example(TOKEN_PREFIX + "e30.e30.", b"", 0.0)
def test_arbitrary_text_only_raises_token_error(token: str, key: bytes, now: float) -> None:
    _outcome(token, key, now)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_non_text_input_is_a_format_error(token: object) -> None:
    assert _outcome(token, SIGNER.public_key, NOW) == "invalid_token_format"


@settings(max_examples=300)
@given(json_values | claims, json_values | claims, st.text(max_size=90), keys)
def test_structured_garbage_only_raises_token_error(
    header: Any, payload: Any, signature: str, key: bytes
) -> None:
    token = f"{TOKEN_PREFIX}{_segment(header)}.{_segment(payload)}.{signature}"
    _outcome(token, key, NOW)


@given(st.sampled_from(["iat", "exp"]), st.integers(min_value=10**300, max_value=10**4000))
def test_huge_numbers_are_refused_not_crashing(claim: str, huge: int) -> None:
    payload = {"scope": "peer:add", "single_use": True, "iat": NOW + 0.5, "exp": NOW + 60}
    payload[claim] = huge
    header = {"typ": "amesh-bootstrap", "ver": "1", "alg": "ES256"}
    token = f"{TOKEN_PREFIX}{_segment(header)}.{_segment(payload)}.AAAA"
    assert _outcome(token, SIGNER.public_key, NOW) != "ok"


def test_deep_nesting_is_a_format_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    token = f"{TOKEN_PREFIX}{b64url_encode(deep.encode())}.e30.AAAA"
    assert _outcome(token[:8192], SIGNER.public_key, NOW) == "invalid_token_format"
    nested = b64url_encode(("[" * 3000 + "]" * 3000).encode())
    assert _outcome(f"{TOKEN_PREFIX}{nested}.e30.AAAA", SIGNER.public_key, NOW) == (
        "invalid_token_format"
    )


@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=MAX_TTL_SECONDS),
    st.data(),
)
def test_minted_tokens_validate_and_any_one_character_change_is_refused(
    name: str, relay: str, ttl: int, data: st.DataObject
) -> None:
    token = mint_token(SIGNER, name=name, relay=relay, ttl_seconds=ttl, now=NOW)
    at = data.draw(st.integers(min_value=NOW, max_value=NOW + ttl - 1))
    assert _outcome(token, SIGNER.public_key, at) == "ok"
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from("AQgw_-.=+/x"))
    mutated = token[:position] + replacement + token[position + 1 :]
    if mutated != token:
        assert _outcome(mutated, SIGNER.public_key, at) != "ok"


def test_lifetime_cap_enforced_at_validation_w6() -> None:
    """Weakness W6: the reference checks the 24 h cap only when minting; we check it on use."""
    header = {"typ": "amesh-bootstrap", "ver": "1", "alg": "ES256"}
    payload = {
        "scope": "peer:add",
        "single_use": True,
        "iat": NOW,
        "exp": NOW + MAX_TTL_SECONDS + 1,
    }
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = b64url_encode(SIGNER.sign(signing_input.encode("ascii")))
    token = f"{TOKEN_PREFIX}{signing_input}.{signature}"
    assert _outcome(token, SIGNER.public_key, NOW) == "token_lifetime_too_long"
    payload["exp"] = NOW + MAX_TTL_SECONDS
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = b64url_encode(SIGNER.sign(signing_input.encode("ascii")))
    assert _outcome(f"{TOKEN_PREFIX}{signing_input}.{signature}", SIGNER.public_key, NOW) == "ok"
