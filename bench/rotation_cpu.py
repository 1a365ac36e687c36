"""CPU of key rotation on a server: checking chains, and one in-band rotation end to end.

    .venv/bin/python bench/rotation_cpu.py [--count 200] [--rounds 3]

No HTTP. Each figure is ``time.process_time`` per operation, best of ``--rounds``:

* ``apply_chain``, 1 and 8 statements: the pure rule check (two ECDSA verifications per
  statement from the trusted key on) against an in-memory allow list;
* ``chain for an unknown key``: what a stranger's forged chain costs (no ECDSA is done);
* ``in-band rotation``: ``Verifier.verify`` of a request signed by the new key and carrying
  the chain, including the locked, sealed rewrite of ``allow_list.json`` — paid once per
  server and rotation.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from authmesh.core._allowlist import AllowList, Device
from authmesh.core._canonical import EMPTY_BODY_SHA256
from authmesh.core._keys import PrivateKey
from authmesh.core._rotation import (
    RotationError,
    RotationStatement,
    apply_chain,
    create_statement,
    encode_chain,
)
from authmesh.sdk._signing import RequestSigner
from authmesh.sdk._verifier import Verifier
from authmesh.store import AllowListStore, AmeshHome

HMAC_KEY = bytes(32)
NOW = 1_800_000_000


def _entry(key: PrivateKey) -> Device:
    return Device.new(
        device_id=key.device_id,
        public_key=key.public_key_b64,
        friendly_name="controller",
        role="controller",
        added_at="2026-01-01T00:00:00.000Z",
    )


def _chain(length: int) -> tuple[list[PrivateKey], list[RotationStatement]]:
    keys = [PrivateKey.generate() for _ in range(length + 1)]
    chain = [create_statement(keys[i], keys[i + 1], i + 1, NOW) for i in range(length)]
    return keys, chain


def _best(run: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(count):
            run()
        best = min(best, (time.process_time() - start) / count)
    return best * 1e6


def _in_band(count: int, rounds: int) -> float:
    """One fresh server home per rotation; only the verify call is timed."""
    best = float("inf")
    for _ in range(rounds):
        total = 0.0
        for _ in range(count):
            old, new = PrivateKey.generate(), PrivateKey.generate()
            with tempfile.TemporaryDirectory() as root:
                home = Path(root)
                allow_list = AllowList.empty("x").with_device(_entry(old), "x")
                (home / "allow_list.json").write_text(allow_list.render(HMAC_KEY))
                verifier = Verifier(AllowListStore(AmeshHome(home), HMAC_KEY), clock=lambda: NOW)
                signer = RequestSigner(new, clock=lambda: NOW)
                header = signer.authorization("GET", "/x", EMPTY_BODY_SHA256)
                chain = encode_chain([create_statement(old, new, 1, NOW)])
                start = time.process_time()
                pending = verifier.begin("GET", "/x", header, "h", chain)
                verifier.finish(pending, b"")
                total += time.process_time() - start
        best = min(best, total / count)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for length in (1, 8):
        keys, chain = _chain(length)
        trusted = AllowList.empty("x").with_device(_entry(keys[0]), "x")

        def apply(trusted: AllowList = trusted, chain: list[RotationStatement] = chain) -> None:
            apply_chain(trusted, chain, NOW)

        cost = _best(apply, args.count, args.rounds)
        print(f"apply_chain, {length} statement(s):   {cost:8.1f} us")
    stranger = AllowList.empty("x").with_device(_entry(PrivateKey.generate()), "x")
    _, forged = _chain(8)

    def refused() -> None:
        with contextlib.suppress(RotationError):
            apply_chain(stranger, forged, NOW)

    print(f"chain for an unknown key (8):     {_best(refused, args.count, args.rounds):8.1f} us")
    print(f"in-band rotation (verify+write):  {_in_band(args.count // 4, args.rounds):8.1f} us")


if __name__ == "__main__":
    main()
