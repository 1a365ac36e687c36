"""Hostile HTTP requests for a protected server, as a hypothesis strategy, and a raw sender.

No request carries a valid signature: an Authorization header is garbage, a well-formed
header with a wrong signature, a correct signature by a key nobody trusts, or a trusted
key's correct signature over another request (a path no request is ever sent to). So a
verifier must refuse every one of them, and without a 5xx.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from hypothesis import strategies as st

from authmesh.core._b64 import b64url_encode
from authmesh.core._header import AuthHeader
from authmesh.core._keys import PrivateKey
from authmesh.sdk._signing import RequestSigner

__all__ = [
    "NOT_ASCII_NUMBERS",
    "SIGNED_ELSEWHERE",
    "forged_authorization",
    "hostile_request",
    "send",
]

SIGNED_ELSEWHERE = "/signed-elsewhere"
DEADLINE = 10.0

_TOKEN = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get"])
_PATH_PIECES = st.sampled_from(
    ["/", "a", "..", ".", "%2e%2e", "%2F", "%00", "%FF", "%", "%zz", "\\", "//", ";", "~", "é"]
)
_QUERY_PIECES = st.sampled_from(["q=%FE", "q=%FF", "a=1&a=2", "=", "&&", "%", "x=é", "#f"])
# Content-Length values a server or the verifier might misread. Lengths that are no ASCII
# number at all are tried on their own (NOT_ASCII_NUMBERS, test_verifier_inputs.py).
_CONTENT_LENGTHS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", " 7 ", "+5", "00005", "9" * 40, "-0"]),
)
# str.isdigit() accepts the first three (latin-1 bytes B2, B9 B2, BC), int() refuses them;
# Django's request.body calls int() on every one of these.
NOT_ASCII_NUMBERS = ["²", "¹²", "¼", "NaN", "0x10", "1e3", "1,2", " "]
_HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
)


def _field(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"'),
        min_size=1,
        max_size=max_size,
    )


def _recent() -> st.SearchStrategy[int]:
    """Timestamps inside the verifier's clock skew, so the body is read before the
    signature is refused."""
    return st.integers(-5, 5).map(lambda delta: int(time.time()) + delta)


def forged_authorization(trusted: PrivateKey) -> str:
    """A well-formed header naming a trusted key, current, with a signature that is zeros."""
    nonce = b64url_encode(bytes(16))
    return AuthHeader("1", trusted.public_key_b64, str(int(time.time())), nonce, "A" * 86).format()


@st.composite
def _authorization(draw: Any, trusted: PrivateKey, untrusted: PrivateKey) -> str | None:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return None
    if choice == 1:
        return str(draw(_HEADER_TEXT))
    if choice == 2:  # well formed, trusted id, signature that signs nothing
        signature = b64url_encode(draw(st.binary(min_size=0, max_size=80)) or b"\0")
        return AuthHeader(
            draw(st.sampled_from(["1", "2", "3", "01"])),
            draw(st.sampled_from([trusted.public_key_b64, draw(_field(120))])),
            str(draw(st.one_of(_recent(), st.integers(min_value=0, max_value=2**40)))),
            draw(_field(40)),
            signature,
        ).format()
    key = untrusted if choice == 3 else trusted
    # A real signature, but by a stranger (3) or over another request (4).
    path = SIGNED_ELSEWHERE if choice == 4 else draw(st.sampled_from(["/", "/a", "/x?q=1"]))
    return RequestSigner(key).authorization("POST", path, "e3b0c442", "127.0.0.1")


@st.composite
def hostile_request(draw: Any, trusted: PrivateKey, untrusted: PrivateKey) -> bytes:
    """One raw HTTP/1.1 request (bytes) that must be refused."""
    method = draw(_TOKEN)
    path = "/" + "".join(draw(st.lists(_PATH_PIECES, max_size=8)))
    query = "&".join(draw(st.lists(_QUERY_PIECES, max_size=3)))
    target = f"{path}?{query}" if query else path
    body = draw(st.binary(max_size=600))
    headers = [("Host", draw(st.sampled_from(["127.0.0.1", "evil", "a:b:c", ""])))]
    authorization = draw(_authorization(trusted, untrusted))
    if authorization is not None:
        headers += [("Authorization", authorization)] * draw(st.integers(1, 2))
    length = draw(st.one_of(st.none(), st.just(str(len(body))), _CONTENT_LENGTHS))
    if length is not None:
        headers.append(("Content-Length", length))
    extra = draw(st.lists(st.tuples(st.sampled_from(["X-A", "Content-Type"]), _HEADER_TEXT)))
    headers += extra
    head = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    # Header bytes are latin-1 on the wire: one character, one byte.
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def send(port: int, request: bytes) -> bytes:
    """Send ``request``, end the writing side (a short body then never keeps the server
    waiting) and return the status line, or b"" if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        received = b""
        deadline = time.monotonic() + DEADLINE
        try:
            while b"\r\n" not in received and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except OSError:
            return b""
    return received.split(b"\r\n", 1)[0]
