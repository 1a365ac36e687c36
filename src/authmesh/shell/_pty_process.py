"""A shell process on a pseudo-terminal, with reliable teardown (stdlib ``pty``/``os`` only).

The child runs in its own session with the PTY as controlling terminal, so it behaves like a
login over ssh: job control works, Ctrl-C reaches the foreground job, and hanging up reaches
every job. Teardown does not trust the shell to exit (an interactive shell ignores SIGTERM,
weakness S5/W1): every process still in the child's session gets SIGHUP (and SIGCONT, so
stopped jobs see it), the PTY is closed, and whatever survives a grace period gets SIGKILL.

The environment is a clean login environment (weakness S7): the agent's secrets
(``AUTH_MESH_*``, ``AMESH_*`` and anything else) are not inherited.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pwd
import signal
import struct
import termios
from collections.abc import Mapping

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_TERM",
    "PtyProcess",
    "exit_status",
    "login_environment",
    "session_members",
]

DEFAULT_TERM = "xterm-256color"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables a login session keeps from the agent's environment (locale and time zone only).
_KEPT = ("LANG", "LANGUAGE", "TZ")
_KILL_GRACE = 2.0
# Linux moves PTY output in pieces of up to 4 KiB; see PtyProcess._gather.
_KERNEL_PIECE = 4096
_GATHER_WAIT = 0.003
_POLL = 0.02


def exit_status(returncode: int) -> int:
    """The shell's status as a shell reports it: the exit code, or 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode


def login_environment(
    base: Mapping[str, str], user: pwd.struct_passwd, shell: str, term: str | None
) -> dict[str, str]:
    """A fresh login environment for ``user``: nothing of the agent's leaks in (S7)."""
    env = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": shell,
        "PATH": DEFAULT_PATH,
        "TERM": term or base.get("TERM") or DEFAULT_TERM,
    }
    for name, value in base.items():
        if name in _KEPT or name.startswith("LC_"):
            env[name] = value
    return env


def session_members(session_id: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session_id`` (Linux ``/proc``)."""
    members = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == session_id:
                members.append(int(entry.name))
    return members


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_controlling_terminal() -> None:  # runs in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyProcess:
    """A running shell on a PTY. Create with :meth:`spawn`; always :meth:`terminate`."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self._process = process
        self._master: int | None = master
        self._unread = b""  # gathered by a read that was cancelled
        self.pid = process.pid

    @classmethod
    async def spawn(
        cls,
        executable: str,
        args: list[str],
        *,
        argv0: str,
        env: Mapping[str, str],
        cwd: str,
        cols: int,
        rows: int,
    ) -> PtyProcess:
        """Start ``executable`` (shown as ``argv0``) with ``args`` on a new PTY."""
        master, slave = os.openpty()
        try:
            _set_size(slave, cols, rows)
            os.set_blocking(master, False)
            process = await asyncio.create_subprocess_exec(
                argv0,
                *args,
                executable=executable,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_take_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def _ready(self, writing: bool) -> None:
        assert self._master is not None
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writing:
            loop.add_writer(self._master, wake)
        else:
            loop.add_reader(self._master, wake)
        try:
            await ready
        finally:
            if self._master is not None:
                (loop.remove_writer if writing else loop.remove_reader)(self._master)

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of output; ``b""`` once no process holds the terminal.

        The kernel hands out PTY output in pieces of at most a few KiB; what is already
        buffered is gathered into one chunk so bulk output travels in few, full frames. A
        cancelled read loses nothing: what it had gathered is returned by the next read.
        """
        if self._unread:
            chunk, self._unread = self._unread[:size], self._unread[size:]
            return chunk
        while self._master is not None:
            try:
                chunk = os.read(self._master, size)
            except BlockingIOError:
                await self._ready(writing=False)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # Linux: every slave end is closed
                    return b""
                raise
            return await self._gather(chunk, size)
        return b""

    async def _gather(self, chunk: bytes, size: int) -> bytes:
        """Add to ``chunk`` what follows at once; bulk output waits a moment for more."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GATHER_WAIT
        while len(chunk) < size:
            more = self.read_available(size - len(chunk))
            if more:
                chunk += more
                continue
            # A short read is interactive output: send it now. A full kernel piece means a
            # program is writing in bulk; a few milliseconds buy frames 4 times larger.
            if len(chunk) < _KERNEL_PIECE or loop.time() >= deadline or self._master is None:
                break
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready(writing=False), deadline - loop.time())
            except asyncio.CancelledError:
                self._unread = chunk + self._unread
                raise
        return chunk

    def read_available(self, size: int) -> bytes:
        """Whatever output is buffered right now, without waiting."""
        if self._unread:
            chunk, self._unread = self._unread[:size], self._unread[size:]
            return chunk
        if self._master is None:
            return b""
        try:
            return os.read(self._master, size)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the terminal, waiting while its input buffer is full."""
        view = memoryview(data)
        while view and self._master is not None:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                await self._ready(writing=True)
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            view = view[written:]

    def resize(self, cols: int, rows: int) -> None:
        """Apply a new window size (the kernel sends SIGWINCH to the foreground job)."""
        if self._master is not None and cols > 0 and rows > 0:
            with contextlib.suppress(OSError):
                _set_size(self._master, cols, rows)

    async def wait(self) -> int:
        """The shell's exit status (128 + signal when killed)."""
        return exit_status(await self._process.wait())

    def _signal_session(self, signum: int) -> bool:
        """Signal the shell's process group and every other process of its session."""
        signalled = False
        # The group, also where /proc does not exist; only while the shell is unreaped, so a
        # reused pid can never make us signal somebody else's group.
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
                signalled = True
        for pid in session_members(self.pid):  # jobs that job control moved to own groups
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
                signalled = True
        return signalled

    def _close_master(self) -> None:
        if self._master is not None:
            master, self._master = self._master, None
            loop = asyncio.get_running_loop()
            loop.remove_reader(master)
            loop.remove_writer(master)
            os.close(master)

    async def terminate(self, grace: float = _KILL_GRACE) -> int:
        """End every process of the session: SIGHUP, close the PTY, SIGKILL after ``grace``.

        Returns the shell's exit status. Safe to call after the shell exited on its own (its
        leftover background jobs are ended the same way) and more than once.
        """
        if self._signal_session(signal.SIGHUP):
            self._signal_session(signal.SIGCONT)
        self._close_master()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while session_members(self.pid) and loop.time() < deadline:
            await asyncio.sleep(_POLL)
        while self._signal_session(signal.SIGKILL) and loop.time() < deadline + grace:
            await asyncio.sleep(_POLL)
        return await self.wait()
