"""Local session recordings in asciicast v2 format (playable with ``asciinema play``).

One file per session, created exclusively with mode 0600 in a 0700 directory: a JSON header
line, then one ``[seconds, "o", text]`` line per output chunk and ``[seconds, "r", "COLSxROWS"]``
per resize. Keystrokes are not recorded (they include passwords typed at prompts); what the
shell echoes is. Output is decoded as UTF-8 incrementally, so characters split across chunks
are kept whole.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

__all__ = ["SessionRecorder", "prepare_directory"]


def prepare_directory(directory: Path) -> Path:
    """Create the recordings directory (0700) or check that it is a writable directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{directory} is not writable")
    return directory


class SessionRecorder:
    """Writes one session's asciicast file. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        directory: Path,
        *,
        session_number: int,
        cols: int,
        rows: int,
        title: str,
        env: dict[str, str],
    ) -> None:
        started = datetime.now(UTC)
        name = f"{started:%Y%m%dT%H%M%SZ}-session-{session_number}.cast"
        self.path = directory / name
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._start = time.monotonic()
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(started.timestamp()),
            "title": title,
            "env": env,
        }
        self._line(header)

    def _line(self, value: object) -> None:
        if self._file is not None:
            self._file.write(json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n")

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._start, 6)

    def output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self._line([self._elapsed(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        self._line([self._elapsed(), "r", f"{cols}x{rows}"])

    def close(self) -> None:
        if self._file is None:
            return
        rest = self._decoder.decode(b"", final=True)
        if rest:
            self._line([self._elapsed(), "o", rest])
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
