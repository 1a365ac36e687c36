"""Several relay processes on one port (``AMESH_WORKERS``): the kernel spreads connections over
the workers, Redis joins the peers of a code that land on different ones, SIGTERM drains them
all, and more than one worker without Redis is refused.

Which worker holds a socket is read from ``/proc``: the relay-side socket of a client's
connection (found by the client's port in ``/proc/net/tcp``) is an open file of one worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import CLUSTER_ENV, fresh_database
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import Client, open_client
from tests.support.relayproc import REPO, RelayProcess, relay_env, wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads socket owners from Linux's /proc"
)

# Pairings tried until one crossed workers and one did not (each is a coin flip).
MAX_PAIRINGS = 40
EXIT_DEADLINE_S = 30.0


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[RelayProcess]:
    """A relay with two workers on a fresh Redis database."""
    env = {**CLUSTER_ENV, "AMESH_REDIS_URL": fresh_database(redis_server), "AMESH_WORKERS": "2"}
    relay = RelayProcess(relay_env(env)).start()
    yield relay
    if relay.alive():
        relay.stop()


def worker_pids(relay: RelayProcess) -> list[int]:
    pid = relay.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _server_socket_inode(relay_port: int, client_port: int) -> str:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) == relay_port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return fields[9]
    raise AssertionError(f"no relay socket for client port {client_port}")


def worker_of(relay: RelayProcess, client: Client) -> int:
    """The pid of the worker that holds ``client``'s connection."""
    link = f"socket:[{_server_socket_inode(relay.port, client.ws.local_address[1])}]"
    for pid in worker_pids(relay):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == link:
                    return pid
            except OSError:
                continue  # closed meanwhile
    raise AssertionError("no worker holds the connection")


async def pair_and_locate(relay: RelayProcess, number: int) -> bool:
    """One pairing through the shared port, data both ways and done; True if its two peers
    sat on different workers."""
    otc = f"{600_000 + number:06d}"
    target, controller = await open_client(relay), await open_client(relay)
    try:
        crossed = worker_of(relay, target) != worker_of(relay, controller)
        assert await target.request({"type": "listen", "otc": otc}) == {
            "type": "ack",
            "message": "session_open",
        }
        assert await controller.request({"type": "connect", "otc": otc}) == {"type": "peer_found"}
        assert await target.recv_json() == {"type": "peer_found"}
        await target.send({"type": "data", "payload": f"to controller {number}"})
        assert await controller.recv_json() == {
            "type": "data",
            "payload": f"to controller {number}",
        }
        await controller.send({"type": "data", "payload": f"to target {number}"})
        assert await target.recv_json() == {"type": "data", "payload": f"to target {number}"}
        await target.send({"type": "done"})
        assert await controller.recv_json() == {"type": "done"}
        return crossed
    finally:
        await target.close()
        await controller.close()


async def test_pairings_cross_workers_on_one_port(workers: RelayProcess) -> None:
    assert len(worker_pids(workers)) == 2
    seen = set()
    for number in range(MAX_PAIRINGS):
        seen.add(await pair_and_locate(workers, number))
        if seen == {True, False}:
            break
    assert seen == {True, False}, "every pairing landed the same way; SO_REUSEPORT not spread"


async def test_sigterm_drains_every_worker(workers: RelayProcess) -> None:
    pids = worker_pids(workers)
    clients: list[Client] = []
    holders: set[int] = set()
    while holders != set(pids) and len(clients) < MAX_PAIRINGS:
        clients.append(await open_client(workers))
        holders.add(worker_of(workers, clients[-1]))
    assert holders == set(pids)
    workers.terminate()
    for client in clients:
        assert await client.closed() == (1001, "going_away")
    assert workers.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_dead_worker_stops_the_relay(workers: RelayProcess) -> None:
    pids = worker_pids(workers)
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: not workers.alive(), EXIT_DEADLINE_S, "the relay to exit")
    assert workers.stop() == 1
    assert "a worker exited unexpectedly" in workers.stderr_text()
    assert not Path(f"/proc/{pids[1]}").exists()


@pytest.mark.parametrize(
    ("args", "env", "given"),
    [
        ([], {"AMESH_WORKERS": "2"}, "AMESH_WORKERS=2"),
        (["--workers", "3"], {}, "--workers 3"),
    ],
)
def test_several_workers_without_redis_are_refused(
    args: list[str], env: dict[str, str], given: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authmesh.relay", *args],
        env=relay_env(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=EXIT_DEADLINE_S,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"amesh-relay: {given} needs AMESH_REDIS_URL, because the two peers of a pairing may "
        "reach different workers; set AMESH_REDIS_URL or run one worker.\n"
    )
