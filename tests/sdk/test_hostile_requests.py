"""Issue 10, items 5 and 6, against each adapter behind its real server.

* A ``Content-Length`` that is not ASCII digits (``²`` passes ``str.isdigit`` but not
  ``int``) is a 400, never a 500.
* A signature made for the normalised target is refused (400) when the target that
  arrives is a different spelling of it: dot segments, ``%2e%2e``, a backslash, or a
  query escape that is not UTF-8 (``%FE`` and ``%FF`` canonicalise alike).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Rejection, Verifier
from tests.sdk.harness import build_request, send_raw
from tests.support.sdk import trusted_store, vector_key

K1 = vector_key("K1")
HOST = "127.0.0.1"


def _use_verifier(adapter: tuple[str, Any, int], tmp_path: Path) -> int:
    _, dispatcher, port = adapter
    dispatcher.use(Verifier(trusted_store(tmp_path / "home", [(K1, "controller", 1)])))
    return port


def _signed_get(signed_target: str, sent_target: str) -> bytes:
    header = RequestSigner(K1).authorization("GET", signed_target, EMPTY_BODY_SHA256)
    return build_request("GET", sent_target, [("Host", HOST), ("Authorization", header)], b"")


@pytest.mark.parametrize("length", ["²", "١٢", "+5", "5 5", "0x10", "-1", "1_0"])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(
    adapter: tuple[str, Any, int], tmp_path: Path, length: str
) -> None:
    port = _use_verifier(adapter, tmp_path)
    header = RequestSigner(K1).authorization("POST", "/up", EMPTY_BODY_SHA256)
    head = (
        f"POST /up HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {header}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()
    response = send_raw(port, head)
    # Some servers refuse such a header themselves (400) before the adapter runs.
    assert response.status == 400, (response.status, response.body)


@pytest.mark.parametrize(
    ("signed", "sent"),
    [
        ("/public", "/admin/../public"),
        ("/public", "/admin/%2e%2e/public"),
        ("/public", "/admin/.%2E/public"),
        ("/public", "/./public"),
        ("/files/a/b", "/files/a\\b"),
        ("/x?q=%FE", "/x?q=%FF"),
        ("/x?q=%FF", "/x?q=%FF"),
        ("/x%FF", "/x%FF"),
    ],
)
def test_a_target_the_app_reads_differently_is_refused(
    adapter: tuple[str, Any, int], tmp_path: Path, signed: str, sent: str
) -> None:
    port = _use_verifier(adapter, tmp_path)
    response = send_raw(port, _signed_get(signed, sent))
    assert response.status == 400, (response.status, response.body)
    if response.body.startswith(b"{"):  # not the server's own refusal
        assert json.loads(response.body) == {"error": "malformed_request"}


def test_the_normalised_target_itself_still_verifies(
    adapter: tuple[str, Any, int], tmp_path: Path
) -> None:
    port = _use_verifier(adapter, tmp_path)
    target = "/files/a%2Fb/%C3%A9t%C3%A9?b=2&a=%E2%82%AC&c=x+y"
    response = send_raw(port, _signed_get(target, target))
    assert response.status == 200, (response.status, response.body)


@pytest.mark.parametrize("length", ["²", "١", "99999999999999999999999", "1 0"])
def test_verifier_content_length_parsing(tmp_path: Path, length: str) -> None:
    verifier = Verifier(trusted_store(tmp_path / "home", [(K1, "controller", 1)]))
    with pytest.raises(Rejection) as refused:
        verifier.check_content_length(length)
    expected = 413 if length.isascii() and length.isdigit() else 400
    assert refused.value.status == expected


def test_client_ignores_a_server_time_hint_that_is_not_ascii_digits() -> None:
    signer = RequestSigner(K1, clock=lambda: 1_800_000_000)
    assert signer.learn_server_time("¹⁸⁰⁰⁰⁰⁰⁰⁴⁰") is False
    assert signer.learn_server_time("١٨٠٠٠٠٠٠٤٠") is False
    assert signer.learn_server_time("1800000040") is True
