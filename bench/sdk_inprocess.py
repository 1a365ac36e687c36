"""CPU authmesh adds per verified request in each adapter, called in process (no server).

    .venv/bin/python bench/sdk_inprocess.py [--count 3000] [--rounds 5]

The apps of ``bench/sdk_adapter_apps.py`` (two identical JSON POST routes, ``/guarded``
verified and ``/open`` exempt) are called directly: ASGI apps with a prepared scope on
uvloop, WSGI apps with a prepared environ. Without a server, socket and parser in the
measurement, the difference between the routes is steadier on a shared machine than
the figures of ``bench/sdk_adapters.py``. Each figure is ``time.process_time`` per
request over ``--count`` requests, each signed beforehand with its own nonce; the
routes alternate and the best of ``--rounds`` is kept. One P-256 verification is
measured in the same run for comparison.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from authmesh.core._canonical import body_sha256
from authmesh.core._keys import PrivateKey
from authmesh.sdk._signing import RequestSigner
from sdk_cpu import drive, ecdsa_microseconds
from sdk_verify import make_home

BODY = json.dumps({"item": "Standing Desk", "amount": 59900}).encode()


def headers(key: PrivateKey, route: str, count: int) -> list[str]:
    signer = RequestSigner(key)
    return [signer.authorization("POST", route, body_sha256(BODY)) for _ in range(count)]


def asgi_scope(route: str, header: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": route, "raw_path": route.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", header.encode("latin-1")),
        ],
    }  # fmt: skip


def asgi_microseconds(app: Any, route: str, signed: list[str]) -> float:
    return uvloop.run(drive(app, [asgi_scope(route, header) for header in signed], BODY))


def wsgi_environ(route: str, header: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": route, "QUERY_STRING": "",
        "RAW_URI": route, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_AUTHORIZATION": header, "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }  # fmt: skip


def wsgi_microseconds(app: Any, route: str, signed: list[str]) -> float:
    environs = [wsgi_environ(route, header) for header in signed]
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    started = time.process_time()
    for environ in environs:
        response = app(environ, start_response)
        b"".join(response)
        getattr(response, "close", lambda: None)()
    elapsed = time.process_time() - started
    if {status[:3] for status in statuses} != {"200"}:
        raise SystemExit(f"{route}: unexpected statuses {sorted(set(statuses))}")
    return elapsed / len(environs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    key = PrivateKey.generate()
    with tempfile.TemporaryDirectory() as directory:
        make_home(Path(directory), key)
        os.environ["AMESH_BENCH_HOME"] = directory
        import sdk_adapter_apps as apps

        adapters: dict[str, tuple[Any, Callable[[Any, str, list[str]], float]]] = {
            "fastapi": (apps.fastapi_app, asgi_microseconds),
            "starlette": (apps.starlette_app, asgi_microseconds),
            "asgi": (apps.asgi_app, asgi_microseconds),
            "flask": (apps.flask_app, wsgi_microseconds),
            "django": (apps.django_app, wsgi_microseconds),
        }
        print(
            f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, "
            f"{args.count} requests per route, best of {args.rounds}"
        )
        ecdsa = min(ecdsa_microseconds(key, args.count) for _ in range(args.rounds))
        print(f"one P-256 verification: {ecdsa:.1f} us")
        for name, (app, measure) in adapters.items():
            best = {"/open": float("inf"), "/guarded": float("inf")}
            for _ in range(args.rounds):
                for route in best:
                    signed = headers(key, route, args.count)
                    best[route] = min(best[route], measure(app, route, signed))
            added = best["/guarded"] - best["/open"]
            print(
                f"{name:10} open {best['/open']:6.1f} us  guarded {best['/guarded']:6.1f} us  "
                f"added {added:6.1f} us (ECDSA {ecdsa:.1f} + rest {added - ecdsa:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
