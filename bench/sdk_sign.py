"""Client-side cost of signing one request, in CPU microseconds.

    .venv/bin/python bench/sdk_sign.py [--count 5000]

Measures the bare header (canonical string, ECDSA P-256 sign, format) and the whole
httpx auth flow for a GET and for a 1 KiB POST (URL normalisation, body hash, header).
No network: requests are built and signed, never sent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import httpx

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.sdk._client import AuthMeshAuth
from authmesh.sdk._signing import RequestSigner


def per_call_microseconds(action: object, count: int) -> float:
    assert callable(action)
    started = time.process_time()
    for _ in range(count):
        action()
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    count = parser.parse_args().count
    key = PrivateKey.generate()
    signer = RequestSigner(key)
    auth = AuthMeshAuth(key)
    body = os.urandom(1024)

    def header_only() -> None:
        signer.authorization("GET", "/api/data?b=2&a=1", EMPTY_BODY_SHA256)

    def httpx_get() -> None:
        next(auth.sync_auth_flow(httpx.Request("GET", "http://api.example.com/api/data?b=2&a=1")))

    def httpx_post() -> None:
        request = httpx.Request("POST", "http://api.example.com/api/orders", content=body)
        next(auth.sync_auth_flow(request))

    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    for label, action in (
        ("header only (canonical + sign + format)", header_only),
        ("httpx auth flow, GET", httpx_get),
        ("httpx auth flow, 1 KiB POST", httpx_post),
    ):
        print(f"{label:42} {per_call_microseconds(action, count):7.1f} us")


if __name__ == "__main__":
    main()
