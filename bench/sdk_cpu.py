"""CPU added per verified request, split into ECDSA and everything around it.

    .venv/bin/python bench/sdk_cpu.py [--count 20000] [--rounds 3]

No HTTP: each figure is ``time.process_time`` over ``--count`` calls in this process,
every request signed beforehand with its own nonce, best of ``--rounds`` (the box is
shared, so the minimum is the least disturbed run).

* ``ecdsa verify``: ``cryptography``'s ``EllipticCurvePublicKey.verify`` on a DER
  signature — the irreducible cost;
* ``Verifier.verify``: header parsing, allow-list lookup, canonical string, ECDSA,
  nonce store; again with :class:`~authmesh.sdk._metrics.VerificationMetrics` as the
  observer (Prometheus counters, histogram, events) when the code has it;
* ``ASGI``: a trivial ASGI app called with a prepared scope, bare and behind
  ``AuthMeshMiddleware``; the difference is what the middleware adds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.asgi import AuthMeshMiddleware
from sdk_verify import make_home

try:
    from authmesh.sdk._metrics import VerificationMetrics
except ImportError:  # measuring a checkout from before the metrics hook
    VerificationMetrics = None  # type: ignore[assignment, misc]

Scope = dict[str, Any]


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def best(measure: Callable[[], float], rounds: int) -> float:
    return min(measure() for _ in range(rounds))


def ecdsa_microseconds(key: PrivateKey, count: int) -> float:
    public = key.key.public_key()
    signed = []
    for index in range(count):
        message = f"AMv1\nGET\n/bench\n{index}\nnonce\n{EMPTY_BODY_SHA256}".encode()
        raw = key.sign(message)
        der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
        signed.append((der, message))
    algorithm = ec.ECDSA(hashes.SHA256())
    started = time.process_time()
    for der, message in signed:
        public.verify(der, message, algorithm)
    return (time.process_time() - started) / count * 1e6


def headers_for(key: PrivateKey, count: int) -> list[str]:
    signer = RequestSigner(key)
    return [signer.authorization("GET", "/bench", EMPTY_BODY_SHA256) for _ in range(count)]


def verifier_microseconds(
    verifier_factory: Callable[[], Verifier], key: PrivateKey, count: int
) -> float:
    verifier = verifier_factory()
    headers = headers_for(key, count)
    started = time.process_time()
    for header in headers:
        verifier.verify("GET", "/bench", header, "127.0.0.1", b"")
    return (time.process_time() - started) / count * 1e6


def scopes_for(headers: list[str]) -> list[Scope]:
    return [
        {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/bench",
            "raw_path": b"/bench",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"user-agent", b"bench"),
                (b"accept", b"*/*"),
                (b"authorization", header.encode("latin-1")),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        for header in headers
    ]


async def drive(app: Any, scopes: list[Scope], body: bytes = b"") -> float:
    """CPU µs per request of ``app`` over ``scopes``, each answered 200 or exit."""
    request = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for scope in scopes:
        await app(scope, receive, send)
    elapsed = time.process_time() - started
    if statuses != [200] * len(scopes):
        raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / len(scopes) * 1e6


def asgi_microseconds(app: Any, key: PrivateKey, count: int) -> float:
    return asyncio.run(drive(app, scopes_for(headers_for(key, count))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    key = PrivateKey.generate()
    with tempfile.TemporaryDirectory() as directory:
        store = make_home(Path(directory), key)

        def verifier() -> Verifier:
            return Verifier(store, nonce_store=InMemoryNonceStore())

        count, rounds = args.count, args.rounds
        print(
            f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, "
            f"{count} calls, best of {rounds}"
        )
        ecdsa = best(lambda: ecdsa_microseconds(key, count), rounds)
        verify = best(lambda: verifier_microseconds(verifier, key, count), rounds)
        observed = None
        if VerificationMetrics is not None:
            from prometheus_client import CollectorRegistry

            def observed_verifier() -> Verifier:
                metrics = VerificationMetrics(CollectorRegistry())
                return Verifier(store, nonce_store=InMemoryNonceStore(), observer=metrics)

            observed = best(lambda: verifier_microseconds(observed_verifier, key, count), rounds)
        bare = best(lambda: asgi_microseconds(ok_app, key, count), rounds)
        protected = best(
            lambda: asgi_microseconds(AuthMeshMiddleware(ok_app, verifier()), key, count), rounds
        )
        added = protected - bare
        print(f"ecdsa verify (cryptography, DER):   {ecdsa:7.1f} us")
        print(
            f"Verifier.verify:                    {verify:7.1f} us  (overhead {verify - ecdsa:.1f})"
        )
        if observed is not None:
            print(f"Verifier.verify + VerificationMetrics: {observed:5.1f} us")
        print(f"ASGI app bare:                      {bare:7.1f} us")
        print(f"ASGI app + AuthMeshMiddleware:      {protected:7.1f} us")
        print(
            f"added per verified request:         {added:7.1f} us  "
            f"(ECDSA {ecdsa:.1f} + ours {added - ecdsa:.1f})"
        )


if __name__ == "__main__":
    main()
