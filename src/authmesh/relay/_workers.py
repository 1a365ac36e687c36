"""Several relay processes on one port (``AMESH_WORKERS`` > 1).

The supervisor reserves the port (bound with ``SO_REUSEPORT``, never listening, so port 0
becomes one real port for all), forks the workers, and waits. Each worker is an independent
relay instance on that port, also with ``SO_REUSEPORT``: the kernel spreads new connections
over the workers, and Redis joins peers that land on different ones. A worker reports
ready through a pipe once it listens; when all are, the supervisor prints the start-up lines.

SIGTERM or SIGINT: the supervisor passes SIGTERM to every worker, each drains as a single
relay does (1001 to every peer, then exit), and the supervisor exits 0 once all have. A
worker that fails to start or dies on its own stops the others and the supervisor exits with
its status (1 when it died by a signal), so the service manager sees the failure.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from authmesh.relay._config import RelayConfig

__all__ = ["supervise"]

START_DEADLINE_S = 60.0
# A worker drains its sockets for a few seconds; past this it is killed.
STOP_DEADLINE_S = 30.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


def _reserve_port(config: RelayConfig) -> socket.socket:
    """A socket bound to the relay's address with SO_REUSEPORT, not listening: it fixes the
    port the workers share (a free one for port 0) and never takes a connection itself."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((config.host, config.port))
    return reserved


def _exit_status(wait_status: int) -> int:
    return os.waitstatus_to_exitcode(wait_status) if os.WIFEXITED(wait_status) else 1


class _Supervisor:
    def __init__(self, config: RelayConfig, serve: Callable[[RelayConfig, int], int]) -> None:
        self.config = config
        self.serve = serve
        self.workers: dict[int, int] = {}  # pid -> worker index
        self.failed_status: int | None = None

    def start(self) -> bool:
        """Fork the workers; True once every one of them listens."""
        ready_read, ready_write = os.pipe()
        for index in range(self.config.workers):
            pid = os.fork()
            if pid == 0:
                os.close(ready_read)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                os._exit(self._worker(ready_write))
            self.workers[pid] = index
        os.close(ready_write)
        try:
            return self._wait_ready(ready_read)
        finally:
            os.close(ready_read)

    def _worker(self, ready: int) -> int:
        """A forked worker's whole life: its exit status (never returns to the caller's code)."""
        try:
            return self.serve(self.config, ready)
        except BaseException:
            traceback.print_exc()
            return 1
        finally:
            sys.stderr.flush()
            sys.stdout.flush()

    def _wait_ready(self, ready: int) -> bool:
        waiting = self.config.workers
        deadline = time.monotonic() + START_DEADLINE_S
        while waiting:
            if self._stop_requested(0) or self._reap() or time.monotonic() > deadline:
                return False
            readable, _, _ = select.select([ready], [], [], 0.1)
            if readable:
                got = os.read(ready, waiting)
                if not got:  # every worker closed the pipe without saying ready
                    return False
                waiting -= len(got)
        return True

    def _stop_requested(self, timeout: float) -> bool:
        """True on SIGTERM/SIGINT; SIGCHLD only wakes the wait (see :meth:`_reap`)."""
        received = signal.sigtimedwait(_SIGNALS, timeout)
        return received is not None and received.si_signo != signal.SIGCHLD

    def _reap(self) -> bool:
        """Collect exited workers; True if one ended without being told to."""
        ended = False
        while self.workers:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if self.workers.pop(pid, None) is not None and self.failed_status is None:
                self.failed_status = _exit_status(wait_status)
                ended = True
        return ended

    def run(self) -> int:
        """Until SIGTERM/SIGINT (0) or until a worker ends on its own (its status)."""
        while not self._stop_requested(1.0):
            if self._reap():
                print(
                    "amesh-relay: a worker exited unexpectedly; stopping the other workers.",
                    file=sys.stderr,
                    flush=True,
                )
                break
        return self.stop()

    def stop(self) -> int:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while self.workers and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            self._reap_quietly()
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.workers:
            pid, _ = os.waitpid(-1, 0)
            self.workers.pop(pid, None)
        return self.failed_status or 0

    def _reap_quietly(self) -> None:
        while self.workers:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            self.workers.pop(pid, None)


def supervise(
    config: RelayConfig,
    serve: Callable[[RelayConfig, int], int],
    started: Callable[[RelayConfig], None],
) -> int:
    """Run ``config.workers`` processes of ``serve(config, ready_fd)`` on one port; ``serve``
    writes one byte to ``ready_fd`` once it listens and returns an exit status. ``started``
    runs once all listen. Returns the relay's exit status."""
    reserved = _reserve_port(config)
    config = replace(config, port=reserved.getsockname()[1])
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    supervisor = _Supervisor(config, serve)
    try:
        if not supervisor.start():
            return supervisor.stop() or 1
        started(config)
        return supervisor.run()
    finally:
        reserved.close()
