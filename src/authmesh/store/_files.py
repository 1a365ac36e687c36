"""Crash-safe file writes and the advisory lock serialising writers of one amesh home.

Writes go to a unique temporary file in the target's directory, are fsynced, renamed
over the target and the directory is fsynced (spec W16: the reference writes a fixed
``<file>.tmp`` without fsync or locking, so concurrent writers lose updates).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from authmesh.store._errors import StoreError

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "atomic_write",
    "ensure_private_dir",
    "exclusive_lock",
    "read_text",
    "remove_file",
]

_DIR_MODE = 0o700
LOCK_TIMEOUT_SECONDS = 10.0


def _io_error(action: str, path: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or type(exc).__name__
    return StoreError("io_error", f"Could not {action} {path} ({reason}); check its permissions.")


def ensure_private_dir(path: Path) -> None:
    """``mkdir -p`` giving every directory it creates mode 0700 (existing ones untouched)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _io_error("create the directory", directory, exc) from exc
        os.chmod(directory, _DIR_MODE)  # mkdir's mode is reduced by the umask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably, the new file having ``mode``."""
    ensure_private_dir(path.parent)
    try:
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _io_error("write", path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise _io_error("write", path, exc) from exc


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text, or ``None`` if it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise StoreError(
            "io_error", f"{path} is not UTF-8 text; restore it or remove it."
        ) from None
    except OSError as exc:
        raise _io_error("read", path, exc) from exc


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _io_error("remove", path, exc) from exc


_held = threading.local()


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600) for the block.

    The lock is advisory: it serialises our own processes (CLI, servers) that change
    the same home; the reference does not take it. It is re-entrant within a thread
    (a second ``flock`` from the same process would wait for itself), and waiting is
    bounded by ``timeout``.
    """
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if lock_path in held:
        yield
        return
    ensure_private_dir(lock_path.parent)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _io_error("open the lock file", lock_path, exc) from exc
    try:
        _acquire(fd, lock_path, timeout)
        held.add(lock_path)
        try:
            yield
        finally:
            held.discard(lock_path)
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, lock_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    "busy",
                    f"Another amesh process has held {lock_path} for over {timeout:g} s; "
                    "wait for it to finish and try again.",
                ) from None
            time.sleep(delay)  # flock has no timed wait: poll, backing off up to 50 ms
            delay = min(delay * 2, 0.05)
