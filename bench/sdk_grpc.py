"""gRPC: server CPU per verified call beside the same server's unguarded method.

    .venv/bin/python bench/sdk_grpc.py [--seconds 4] [--rounds 3] [--concurrency 32]
        [--paced CALLS_PER_SECOND]

One grpcio server process (127.0.0.1, port chosen by the OS; the sync server with a
thread pool, then grpc.aio) serves three unary methods over generic bytes handlers:
``/bench.Orders/Guarded`` behind the authmesh server interceptor, and two exempted from
it: ``/bench.Orders/Open`` (the same trivial handler) and ``/bench.Orders/Control``,
whose handler does one P-256 verification of a fixed signature itself, the work no
verifier can skip, without authmesh. Guarded minus Open is what authmesh adds; Guarded
minus Control is what it adds beyond the signature check at the same call rate.

Load comes from this process: a grpc.aio channel with ``--concurrency`` calls in flight,
each call carrying metadata signed beforehand with its own nonce (the exempt methods get
the same metadata and bytes). Without ``--paced`` every method runs as fast as it can,
so a faster method also gets more calls per wakeup of the server's transport; with
``--paced N`` every method is offered the same N calls per second, which takes that
difference out. Only OK answers count; any refusal is a failure. Before that, in process
and in the same run: one P-256 verification, ``Verifier.verify``, and a handler called
directly and through the sync interceptor (no transport).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import NamedTuple

import grpc
import grpc.aio

import route_cpu
from authmesh.core._keys import PrivateKey
from authmesh.core._nonce import InMemoryNonceStore
from authmesh.sdk._grpc_call import MessageDigest
from authmesh.sdk._verifier import Verifier
from authmesh.sdk.grpc import AuthMeshServerInterceptor, CallSigner
from authmesh.store import AllowListStore

BODY = b'{"item": "widget", "amount": 100, "currency": "EUR"}'
AUTHORITY = "127.0.0.1"
GUARDED, OPEN, CONTROL = "/bench.Orders/Guarded", "/bench.Orders/Open", "/bench.Orders/Control"
SERVER = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
import grpc
from authmesh.sdk.grpc import AuthMeshAioServerInterceptor, AuthMeshServerInterceptor
from authmesh.sdk._verifier import Verifier
from authmesh.core._keys import PrivateKey, verify_with_key
from authmesh.store import AllowListStore, AmeshHome

home, kind = sys.argv[1], sys.argv[2]
store = AllowListStore(AmeshHome.from_env({"AUTH_MESH_DIR": home}), bytes(32))
verifier = Verifier(store)
EXEMPT = {"/bench.Orders/Open", "/bench.Orders/Control"}
key = PrivateKey.generate()
public_key, signed = key.key.public_key(), b"AMgrpc1" + bytes(200)
signature = key.sign(signed)

def order(request, context):
    return b'{"accepted": true}'

def control(request, context):
    assert verify_with_key(public_key, signature, signed)
    return b'{"accepted": true}'

async def aio_order(request, context):
    return order(request, context)

async def aio_control(request, context):
    return control(request, context)

def handlers(function, checking):
    functions = {"Guarded": function, "Open": function, "Control": checking}
    methods = {name: grpc.unary_unary_rpc_method_handler(f) for name, f in functions.items()}
    return [grpc.method_handlers_generic_handler("bench.Orders", methods)]

async def serve_aio():
    interceptor = AuthMeshAioServerInterceptor(verifier, exempt_methods=EXEMPT)
    server = grpc.aio.server(handlers=handlers(aio_order, aio_control), interceptors=[interceptor])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

if kind == "aio":
    asyncio.run(serve_aio())
else:
    interceptor = AuthMeshServerInterceptor(verifier, exempt_methods=EXEMPT)
    server = grpc.server(ThreadPoolExecutor(max_workers=16), handlers=handlers(order, control),
                         interceptors=[interceptor])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
"""


async def load(
    port: int, method: str, metadata: list[tuple[tuple[str, str], ...]], seconds: float,
    concurrency: int, paced: float | None = None,
) -> tuple[int, int]:  # fmt: skip
    """(OK answers, refused calls) with ``concurrency`` calls in flight for ``seconds``,
    started ``paced`` calls per second at most."""
    started = time.monotonic()
    deadline = started + seconds
    pending = iter(metadata)
    slots = itertools.count()
    ok = failed = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)

        async def caller() -> None:
            nonlocal ok, failed
            while time.monotonic() < deadline and (signed := next(pending, None)):
                if paced is not None:
                    await asyncio.sleep(started + next(slots) / paced - time.monotonic())
                try:
                    await call(BODY, metadata=signed, timeout=10)
                    ok += 1
                except grpc.aio.AioRpcError:
                    failed += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return ok, failed


class _Details(NamedTuple):
    """What a server interceptor is handed about a call."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _Context:
    """The two context methods the interceptor may call, for calls made in process."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise SystemExit(f"call refused in process: {code} {details}")

    def set_trailing_metadata(self, metadata: object) -> None:
        return None


def print_in_process(store: AllowListStore, key: PrivateKey, count: int = 2000) -> None:
    """Sync interceptor and handler called directly (no gRPC transport), same run."""
    route_cpu.print_floor(store, key, count)
    now = time.time()  # one clock for both: signing the pool may take a while
    signer = CallSigner(key, AUTHORITY, clock=lambda: now)
    verifier = Verifier(store, nonce_store=InMemoryNonceStore(), clock=lambda: now)
    interceptor = AuthMeshServerInterceptor(verifier)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok")
    context = _Context()

    def one_round() -> tuple[float, float]:
        digest = MessageDigest.of([BODY])
        calls = [_Details(GUARDED, signer.metadata(GUARDED, digest)) for _ in range(count)]
        started = time.process_time()
        for _ in calls:
            handler.unary_unary(BODY, context)
        bare = (time.process_time() - started) / count * 1e6
        started = time.process_time()
        for details in calls:
            interceptor.intercept_service(lambda _: handler, details).unary_unary(BODY, context)
        return bare, (time.process_time() - started) / count * 1e6

    bare, guarded = min(one_round() for _ in range(3))
    print(
        f"in process: handler {bare:.1f} us, behind AuthMeshServerInterceptor {guarded:.1f} us, "
        f"added {guarded - bare:.1f} us"
    )


def measure(kind: str, home: str, signer: CallSigner, args: argparse.Namespace) -> None:
    """The three methods of one server process of ``kind`` (sync or aio)."""
    digest = MessageDigest.of([BODY])
    with route_cpu.server_process(SERVER, home, kind) as (pid, port):

        def prepare(method: str, count: int) -> route_cpu.Run:
            # Every call gets a fresh nonce; the exempt methods ignore them.
            metadata = [signer.metadata(GUARDED, digest) for _ in range(count)]
            if method != GUARDED:
                metadata *= round(args.seconds * args.rate * 4 / count) + 1
            return lambda: asyncio.run(
                load(port, method, metadata, args.seconds, args.concurrency, args.paced)
            )

        prepare(OPEN, 100)()  # warm-up
        pool = round(args.seconds * (args.paced or args.rate) * 1.1)
        phases = {f"{OPEN} (exempt)": lambda: prepare(OPEN, 1000)}
        phases[f"{CONTROL} (exempt)"] = lambda: prepare(CONTROL, 1000)
        phases[GUARDED] = lambda: prepare(GUARDED, pool)
        results = route_cpu.alternate(pid, phases, args.rounds)
    pace = f"paced at {args.paced:.0f} calls/s" if args.paced else "unpaced"
    title = f"grpcio {kind} server, {args.concurrency} calls in flight, {pace}"
    route_cpu.print_phases(title, results)


def main() -> None:
    args = route_cpu.parse_arguments(
        __doc__.splitlines()[0], rate=5000, paced="offer every method this many calls/s"
    )
    key = PrivateKey.generate()
    signer = CallSigner(key, AUTHORITY)
    kinds = ("sync", "aio")
    route_cpu.run_servers(
        key, print_in_process, kinds, lambda kind, home: measure(kind, home, signer, args)
    )


if __name__ == "__main__":
    main()
