"""The canonical request string that AuthMesh signatures cover.

Version 1 is the reference's string, byte for byte (spec sdk-keystore.md §3)::

    "AMv1" LF METHOD LF PATH LF TS LF NONCE LF hex(SHA-256(body))

Version 2 is ours: it adds the authority (``host[:port]``) after the method, so a
request signed for one server cannot be replayed against another server that
trusts the same controller (weakness W15)::

    "AMv2" LF METHOD LF AUTHORITY LF PATH LF TS LF NONCE LF hex(SHA-256(body))

PATH is derived in two stages, both reproduced here:

* stage A (:func:`split_url` for a client URL, :func:`request_target_path` for a
  server's request-target): the WHATWG URL parser's ``pathname + search`` for a
  special scheme — dot segments resolved (``%2e`` counts), ``\\`` read as ``/``,
  the path and query percent-encode sets applied (``^`` encoded, as Bun does),
  existing ``%XX`` kept, the fragment and an empty ``?`` dropped;
* stage B (:func:`sort_query`, run inside :func:`canonical_string`): the query is
  parsed and re-serialised as ``application/x-www-form-urlencoded`` by
  ``URLSearchParams`` and stably sorted by name in UTF-16 code-unit order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "EMPTY_BODY_SHA256",
    "SUPPORTED_VERSIONS",
    "CanonicalError",
    "SplitUrl",
    "body_sha256",
    "canonical_string",
    "normalize_authority",
    "request_target_path",
    "sort_query",
    "split_url",
]

EMPTY_BODY_SHA256: Final = hashlib.sha256(b"").hexdigest()
SUPPORTED_VERSIONS: Final = ("1", "2")
_NEWLINE_MESSAGE: Final = "Canonical string fields must not contain newlines"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")
_LEADING_TRAILING_C0_SPACE = re.compile(r"^[\x00-\x20]+|[\x00-\x20]+$")
_TAB_OR_NEWLINE = re.compile(r"[\t\n\r]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SLASHES = re.compile(r"[/\\]")
_PERCENT_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_REG_NAME = re.compile(r"[a-z0-9\-._~!$&'()*+,;=]+")
# Targets WHATWG parsing leaves unchanged: no dot, backslash or fragment, nothing to encode.
_PLAIN_TARGET = re.compile(
    r"/[A-Za-z0-9\-_~!$&'()*+,;=:@/%|]*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/%|?^`{}\[\]]+)?"
)
_AUTHORITY = re.compile(r"(?:\[[0-9a-f:.]+\]|[a-z0-9\-._~!$&'()*+,;=]+)(?::[0-9]{1,5})?")


class CanonicalError(ValueError):
    """A request cannot be put into canonical form (newline in a field, bad URL)."""


def _percent_encoder(extra: str) -> list[str]:
    """Byte -> output table: C0 controls, bytes above 0x7E and ``extra`` are escaped."""
    table = [chr(b) for b in range(256)]
    for b in range(256):
        if b < 0x20 or b > 0x7E or chr(b) in extra:
            table[b] = f"%{b:02X}"
    return table


# WHATWG path percent-encode set plus "^" (Bun encodes it, Node 20 does not — W5;
# encoding it is the choice that both runtimes' servers accept from our clients).
_PATH_ENCODE: Final = _percent_encoder(' "#<>?`{}^')
# WHATWG special-query percent-encode set.
_QUERY_ENCODE: Final = _percent_encoder(" \"#<>'")
# application/x-www-form-urlencoded serialiser: only * - . _ and alphanumerics stay.
_FORM_ENCODE: Final = [
    chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "*-._") else f"%{b:02X}"
    for b in range(256)
]
_FORM_ENCODE[0x20] = "+"


def _usv_utf8(text: str) -> bytes:
    """UTF-8 of ``text`` as a JS USVString: lone surrogates become U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def _encode(text: str, table: list[str]) -> str:
    return "".join(table[b] for b in _usv_utf8(text))


def _preprocess(url: str) -> str:
    """The WHATWG parser's input clean-up: trim C0/space, drop tabs and newlines."""
    return _TAB_OR_NEWLINE.sub("", _LEADING_TRAILING_C0_SPACE.sub("", url))


def _is_single_dot(segment: str) -> bool:
    return segment.lower() in (".", "%2e")


def _is_double_dot(segment: str) -> bool:
    return segment.lower() in ("..", ".%2e", "%2e.", "%2e%2e")


def _pathname(path: str) -> str:
    """WHATWG path state for a special URL: segments, dot resolution, encoding."""
    if path[:1] in ("/", "\\"):
        path = path[1:]
    segments = _SLASHES.split(path)
    output: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if _is_double_dot(segment):
            if output:
                output.pop()
            if index == last:
                output.append("")
        elif _is_single_dot(segment):
            if index == last:
                output.append("")
        else:
            output.append(_encode(segment, _PATH_ENCODE))
    return "/" + "/".join(output)


def _path_and_search(rest: str) -> str:
    """``pathname + search`` of everything after the authority (fragment dropped)."""
    rest = rest.partition("#")[0]
    path, _, query = rest.partition("?")
    search = "?" + _encode(query, _QUERY_ENCODE) if query else ""
    return _pathname(path) + search


def _parse_host(host: str) -> str:
    if host.startswith("["):
        if not host.endswith("]") or not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host):
            raise CanonicalError("the URL has an invalid IPv6 host")
        return host.lower()
    if not host:
        raise CanonicalError("the URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise CanonicalError("the URL host is not a valid domain name") from exc
    host = host.lower()
    if not _REG_NAME.fullmatch(host):
        raise CanonicalError("the URL host contains characters a host cannot have")
    return host


@dataclass(frozen=True, slots=True)
class SplitUrl:
    """An absolute ``http``/``https`` URL as the WHATWG parser sees it."""

    scheme: str
    host: str
    port: int | None
    """``None`` when absent or the scheme's default (WHATWG drops default ports)."""
    target: str
    """``pathname + search``: the origin-form request-target to send and sign."""

    @property
    def authority(self) -> str:
        """``host[:port]``, the value of the ``Host`` header and of v2's AUTHORITY."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


def split_url(url: str) -> SplitUrl:
    """Parse an absolute ``http``/``https`` URL (spec §3.2 stage A, client side).

    Raises :class:`CanonicalError` for relative URLs, other schemes, or a bad
    host or port. IPv4 shorthand forms (``0x7f.1``) are not rewritten.
    """
    text = _preprocess(url)
    match = _SCHEME.match(text)
    scheme = match.group()[:-1].lower() if match else ""
    if match is None or scheme not in _DEFAULT_PORTS:
        raise CanonicalError("only absolute http:// and https:// URLs can be signed")
    rest = text[match.end() :].lstrip("/\\")
    end = len(rest)
    for delimiter in "/\\?#":
        position = rest.find(delimiter)
        if position != -1:
            end = min(end, position)
    authority, rest = rest[:end], rest[end:]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        closing = hostport.find("]")
        host_text, port_text = hostport[: closing + 1], hostport[closing + 1 :]
        if port_text and not port_text.startswith(":"):
            raise CanonicalError("the URL has an invalid IPv6 host")
        port_text = port_text[1:]
    else:
        host_text, _, port_text = hostport.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
            raise CanonicalError("the URL port must be a number from 0 to 65535")
        port = int(port_text)
        if port == _DEFAULT_PORTS[scheme]:
            port = None
    return SplitUrl(scheme, _parse_host(host_text), port, _path_and_search(rest))


def request_target_path(target: str) -> str:
    """The path a server canonicalises for a received request-target (stage A).

    Equivalent to the reference's ``new URL(req.url, base).pathname + search``
    with one deliberate difference: an origin-form target starting with ``//``
    is read as a path, never as a scheme-relative URL whose first segment would
    become a host (the reference then canonicalises a different path than the
    client signed). Absolute-form targets contribute only their path and query.
    """
    if _PLAIN_TARGET.fullmatch(target) and "%2e" not in target.lower():
        return target
    text = _preprocess(target)
    match = _SCHEME.match(text)
    if match:
        return split_url(text).target
    return _path_and_search(text if text[:1] in ("/", "\\") else "/" + text)


def normalize_authority(value: str) -> str:
    """A ``Host`` value as v2 signs it: ASCII-lowercased ``host[:port]``, validated."""
    authority = value.strip(" \t").lower()
    if not _AUTHORITY.fullmatch(authority):
        raise CanonicalError("the Host value is not a valid host[:port]")
    return authority


def _form_decode(text: str) -> str:
    raw = _usv_utf8(text.replace("+", " "))
    decoded = _PERCENT_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return decoded.decode("utf-8", "replace")


def _utf16_key(pair: tuple[str, str]) -> bytes:
    return pair[0].encode("utf-16-be", "surrogatepass")


def sort_query(path: str) -> str:
    """Stage B: sort and re-serialise the query as ``URLSearchParams`` would.

    Split at the first ``?``; pieces split on ``&`` (empty ones skipped) and at
    their first ``=``; ``+`` -> space; percent-decoding bytewise, invalid UTF-8
    replaced; stable sort by name in UTF-16 code units; serialised with only
    ``*-._`` and alphanumerics literal and space as ``+``. The ``?`` is dropped
    when nothing remains. Without a ``?`` the path is returned unchanged.
    """
    base, question, query = path.partition("?")
    if not question:
        return path
    pairs = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((_form_decode(name), _form_decode(value)))
    pairs.sort(key=_utf16_key)
    serialised = "&".join(
        _encode(name, _FORM_ENCODE) + "=" + _encode(value, _FORM_ENCODE) for name, value in pairs
    )
    return f"{base}?{serialised}" if serialised else base


def body_sha256(body: bytes | str | None) -> str:
    """Lowercase hex SHA-256 of the body; ``str`` is UTF-8 (lone surrogates -> U+FFFD)."""
    if body is None:
        return EMPTY_BODY_SHA256
    data = _usv_utf8(body) if isinstance(body, str) else body
    return hashlib.sha256(data).hexdigest()


def canonical_string(
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body_hash: str,
    *,
    version: str = "1",
    authority: str | None = None,
) -> str:
    """Build the string to sign; ``body_hash`` is :func:`body_sha256` of the body.

    ``path`` is the stage-A path (as from :func:`split_url` or
    :func:`request_target_path`); its query is sorted here. Version ``"2"``
    requires ``authority`` (see :func:`normalize_authority`), version ``"1"``
    refuses one. Raises :class:`CanonicalError` when a field contains ``\\n``.
    """
    if version == "1":
        if authority is not None:
            raise CanonicalError("a version 1 canonical string does not cover the authority")
        fields = [method, path, timestamp, nonce]
    elif version == "2":
        if authority is None:
            raise CanonicalError("a version 2 canonical string needs the authority")
        fields = [method, authority, path, timestamp, nonce]
    else:
        raise CanonicalError(f"canonical string version {version!r} is not supported")
    if any("\n" in field for field in fields):
        raise CanonicalError(_NEWLINE_MESSAGE)
    if version == "1":
        return f"AMv1\n{method.upper()}\n{sort_query(path)}\n{timestamp}\n{nonce}\n{body_hash}"
    return (
        f"AMv2\n{method.upper()}\n{authority}\n{sort_query(path)}\n"
        f"{timestamp}\n{nonce}\n{body_hash}"
    )
