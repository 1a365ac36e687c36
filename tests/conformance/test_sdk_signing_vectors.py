"""Request signing against the reference vectors in sdk.json.

Sections: device ids, canonical strings, query normalisation, URL -> path,
deterministic signatures, verification, base64 decoding, the Authorization header
grammar and DER -> raw conversion. Where our behaviour deliberately differs from
the reference (strict base64, spec §4.3), the test asserts ours and names why.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from authmesh.core import _keys as keys
from authmesh.core._b64 import B64Error, b64decode, b64url_encode
from authmesh.core._canonical import (
    CanonicalError,
    body_sha256,
    canonical_string,
    request_target_path,
    sort_query,
    split_url,
)
from authmesh.core._header import AuthHeader, HeaderError, parse_header
from tests.conformance.ledger import record
from tests.support.vectorfiles import section

FILE = "sdk.json"


def _vectors(path: str) -> list[Any]:
    return list(enumerate(section(FILE, path)))


def _ids(path: str) -> list[str]:
    return [str(vector.get("name", index)) for index, vector in _vectors(path)]


def _params(path: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("index", "vector"), _vectors(path), ids=_ids(path))


@_params("device_ids.vectors")
def test_device_ids(index: int, vector: dict[str, Any]) -> None:
    public_key = bytes.fromhex(vector["public_key_compressed_hex"])
    assert keys.device_id(public_key) == vector["device_id"]
    record(FILE, "device_ids.vectors", index)


def _body(spec: dict[str, str] | None) -> bytes | str | None:
    if spec is None:
        return None
    return spec["utf8"] if "utf8" in spec else bytes.fromhex(spec["hex"])


@_params("canonical.vectors")
def test_canonical_strings(index: int, vector: dict[str, Any]) -> None:
    given, expected = vector["input"], vector["expected"]
    arguments = (given["method"], given["path"], given["timestamp"], given["nonce"])
    body_hash = body_sha256(_body(given["body"]))
    if "error" in expected:
        with pytest.raises(CanonicalError, match=expected["error"]):
            canonical_string(*arguments, body_hash)
    else:
        assert body_hash == expected["body_sha256_hex"]
        assert sort_query(given["path"]) == expected["normalized_path"]
        assert canonical_string(*arguments, body_hash) == expected["canonical"]
    record(FILE, "canonical.vectors", index)


@_params("query_normalisation.vectors")
def test_query_normalisation(index: int, vector: dict[str, str]) -> None:
    assert sort_query(vector["path"]) == vector["canonical_path"]
    record(FILE, "query_normalisation.vectors", index)


@_params("url_to_path.vectors")
def test_url_to_path(index: int, vector: dict[str, str]) -> None:
    target = split_url(vector["url"]).target
    assert target == vector["path_passed_to_canonical"]
    assert sort_query(target) == vector["canonical_path"]
    # A server that receives this target (origin- or absolute-form) derives the same path.
    assert request_target_path(target) == target
    assert request_target_path(vector["url"]) == target
    record(FILE, "url_to_path.vectors", index)


@_params("signing.vectors")
def test_deterministic_signatures(index: int, vector: dict[str, Any]) -> None:
    key = keys.PrivateKey.from_scalar(bytes.fromhex(vector["private_key_hex"]))
    message = vector["message_utf8"].encode("utf-8")
    signature = key.sign(message)
    assert key.public_key_b64 == vector["public_key_b64"]
    assert signature.hex() == vector["signature_hex"] == vector["r_hex"] + vector["s_hex"]
    assert b64url_encode(signature) == vector["signature_b64url"]
    assert vector["low_s"] and int(vector["s_hex"], 16) <= keys.CURVE_ORDER // 2
    assert keys.verify(key.public_key, signature, message)
    record(FILE, "signing.vectors", index)


@_params("verification.vectors")
def test_verification(index: int, vector: dict[str, Any]) -> None:
    valid = keys.verify(
        bytes.fromhex(vector["public_key_hex"]),
        bytes.fromhex(vector["signature_hex"]),
        vector["message_utf8"].encode("utf-8"),
    )
    assert valid is vector["expected_valid"]
    record(FILE, "verification.vectors", index)


# Node's decoder skips whitespace and invalid characters, stops at the first "=" and
# drops a lone trailing 6-bit group (spec §4.3). Ours refuses all of these, so a
# mangled sig/id/hmac is an error instead of silently different bytes.
NODE_LENIENT_ONLY = {
    "with_whitespace",
    "with_invalid_chars",
    "equals_in_middle",
    "extra_chars_len_mod4_eq_1",
}


@_params("base64_decoding.vectors")
def test_base64_decoding_is_strict(index: int, vector: dict[str, str]) -> None:
    assert vector["base64_decode_hex"] == vector["base64url_decode_hex"]
    if vector["name"] in NODE_LENIENT_ONLY:
        with pytest.raises(B64Error):
            b64decode(vector["input"])
    else:
        assert b64decode(vector["input"]).hex() == vector["base64_decode_hex"]
    record(FILE, "base64_decoding.vectors", index)


def _middleware_outcome(header: str | None) -> str:
    try:
        parsed = parse_header(header)
    except HeaderError as error:
        return "400 missing_header" if error.reason == "absent" else "400 malformed_header"
    return "continue" if parsed.v == "1" else "400 unsupported_version"


@_params("auth_header.vectors")
def test_auth_header_grammar(index: int, vector: dict[str, Any]) -> None:
    header = vector["header"]
    if vector["expected"] is None:
        with pytest.raises(HeaderError) as caught:
            parse_header(header)
        assert caught.value.reason == vector["rejection_reason"]
    else:
        parsed = parse_header(header)
        assert dataclasses.asdict(parsed) == vector["expected"]
        # What we format from the parsed fields parses back to the same fields.
        assert parse_header(parsed.format()) == parsed
    assert _middleware_outcome(header) == vector["middleware_outcome"]
    record(FILE, "auth_header.vectors", index)


def test_formatter_writes_the_reference_layout() -> None:
    built = section(FILE, "auth_header.vectors")[0]
    assert built["name"] == "valid_built"
    assert AuthHeader(**built["expected"]).format() == built["header"]


@_params("macos_der_to_raw.vectors")
def test_der_to_raw(index: int, vector: dict[str, Any]) -> None:
    raw = keys.der_to_raw(bytes.fromhex(vector["der_hex"]))
    assert raw.hex() == vector["raw_hex"]
    public_key = bytes.fromhex(vector["public_key_compressed_hex"])
    assert (
        keys.verify(public_key, raw, vector["message_utf8"].encode("utf-8"))
        is vector["raw_verifies"]
    )
    record(FILE, "macos_der_to_raw.vectors", index)
