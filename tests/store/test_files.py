"""Atomic writes and the home lock, with a real second process holding the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from authmesh.store import StoreError
from authmesh.store._files import atomic_write, ensure_private_dir, exclusive_lock, read_text
from tests.store.homes import mode_of

_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_atomic_write_replaces_even_read_only_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / ".passphrase"
    atomic_write(target, b"first", 0o400)
    atomic_write(target, b"second", 0o400)
    assert target.read_bytes() == b"second"
    assert mode_of(target) == 0o400
    assert mode_of(tmp_path / "deep") == 0o700
    assert mode_of(tmp_path / "deep" / "dir") == 0o700
    assert [p.name for p in target.parent.iterdir()] == [".passphrase"]


def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    ensure_private_dir(shared / "home")
    assert mode_of(shared) == 0o755
    assert mode_of(shared / "home") == 0o700


def test_read_text(tmp_path: Path) -> None:
    assert read_text(tmp_path / "absent") is None
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(StoreError) as not_text:
        read_text(tmp_path / "binary")
    assert not_text.value.code == "io_error"


def test_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    lock = tmp_path / ".amesh.lock"
    with exclusive_lock(lock), exclusive_lock(lock, timeout=0.1):
        assert mode_of(lock) == 0o600


def test_lock_held_by_another_process_times_out_then_frees(tmp_path: Path) -> None:
    lock = tmp_path / ".amesh.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError) as busy, exclusive_lock(lock, timeout=0.2):
            pass
        assert busy.value.code == "busy"
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
        with exclusive_lock(lock, timeout=5):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
