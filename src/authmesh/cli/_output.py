"""Terminal output of the ``amesh`` CLI, laid out like the reference (oclif) CLI.

The reference prints errors and warnings through oclif's pretty printer: the text is wrapped by
``wrap-ansi`` (hard, no trimming) at the error terminal width minus 6, and every line gets the
prefix `` ›   ``. We reproduce that layout so operators see the same text, and print everything
else verbatim (spinners: :mod:`authmesh.cli._interaction`). Exit statuses are ours
(:mod:`authmesh.cli._exit_codes`).

With ``--json`` (:func:`json_mode`), stdout carries only JSON objects, one per line
(:func:`emit`); the human text of :func:`out` and every prompt go to stderr instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import unicodedata
from typing import IO, Any

from authmesh.errors import AuthMeshError

__all__ = [
    "CliError",
    "emit",
    "format_error",
    "format_warning",
    "human_stream",
    "is_json_mode",
    "json_mode",
    "out",
    "print_error",
    "print_warning",
    "prompt_line",
    "wrap_like_oclif",
]

_BANG = "›"
_NON_TTY_COLUMNS = 80


class CliError(AuthMeshError):
    """A failure of a command, printed as one oclif-style error.

    ``code`` decides the exit status (:func:`authmesh.cli.exit_code_for`): ``usage``
    for a wrong command line, ``failed`` (the default) for an operation that could not be done,
    or any code of the library errors.
    """

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(code, message)


class _Mode:
    json = False


def json_mode(enabled: bool) -> None:
    """Switch ``--json`` output on: stdout gets only :func:`emit`'s objects."""
    _Mode.json = enabled


def is_json_mode() -> bool:
    return _Mode.json


def human_stream() -> IO[str]:
    """Where text for people goes: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if _Mode.json else sys.stdout


def emit(event: str, **fields: Any) -> None:
    """One JSON object on one stdout line (``--json`` only): ``{"event": event, **fields}``."""
    if not _Mode.json:
        return
    sys.stdout.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_char_width(c) for c in text)


def _hard_wrap_word(rows: list[str], word: str, columns: int) -> None:
    """Split one over-long word across rows (wrap-ansi ``wrapWord`` without ANSI codes)."""
    visible = _width(rows[-1])
    for char in word:
        if visible + _char_width(char) > columns:
            rows.append("")
            visible = 0
        rows[-1] += char
        visible += _char_width(char)


def _wrap_line(line: str, columns: int) -> str:
    """wrap-ansi's ``exec`` for ``{hard: true, trim: false}``: spaces are kept where they fall."""
    words = line.split(" ")
    rows = [""]
    for index, word in enumerate(words):
        row_length = _width(rows[-1])
        if index != 0:
            if row_length >= columns:
                rows.append("")
                row_length = 0
            rows[-1] += " "
            row_length += 1
        word_length = _width(word)
        if word_length > columns:
            remaining = columns - row_length
            starting_this_line = 1 + (word_length - remaining - 1) // columns
            starting_next_line = (word_length - 1) // columns
            if starting_next_line < starting_this_line:
                rows.append("")
            _hard_wrap_word(rows, word, columns)
            continue
        if row_length + word_length > columns and row_length > 0 and word_length > 0:
            rows.append("")
        rows[-1] += word
    return "\n".join(rows)


def wrap_like_oclif(text: str, columns: int) -> str:
    """Wrap ``text`` exactly as wrap-ansi does with ``{hard: true, trim: false}``."""
    normalized = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    return "\n".join(_wrap_line(line, columns) for line in normalized.split("\n"))


def _error_columns() -> int:
    if sys.stderr.isatty():
        return max(shutil.get_terminal_size((_NON_TTY_COLUMNS, 24)).columns, 40)
    override = os.environ.get("COLUMNS", "")
    return (
        int(override)
        if override.isascii() and override.isdigit() and int(override) >= 40
        else _NON_TTY_COLUMNS
    )


def _pretty(kind: str, message: str, columns: int) -> str:
    wrapped = wrap_like_oclif(f"{kind}: {message}", columns - 6)
    return "\n".join(f" {_BANG}   {line}" for line in wrapped.split("\n"))


def format_error(message: str, columns: int = _NON_TTY_COLUMNS) -> str:
    """`` ›   Error: <message>`` wrapped like oclif (no trailing newline)."""
    return _pretty("Error", message, columns)


def format_warning(message: str, columns: int = _NON_TTY_COLUMNS) -> str:
    """`` ›   Warning: <message>`` wrapped like oclif (no trailing newline)."""
    return _pretty("Warning", message, columns)


def print_error(message: str) -> None:
    """Print an oclif-style error to stderr."""
    sys.stdout.flush()
    sys.stderr.write(format_error(message, _error_columns()) + "\n")
    sys.stderr.flush()


def print_warning(message: str) -> None:
    """Print an oclif-style warning to stderr."""
    sys.stdout.flush()
    sys.stderr.write(format_warning(message, _error_columns()) + "\n")
    sys.stderr.flush()


def out(text: str = "") -> None:
    """One line of human text, verbatim (no markup, no wrapping), flushed for pipes and ptys."""
    stream = human_stream()
    stream.write(text + "\n")
    stream.flush()


def prompt_line(prompt: str) -> str | None:
    """Write ``prompt`` without a newline and read one answer line (``None`` at end of input).

    Only the line terminator is removed: the reference compares answers untrimmed.
    """
    stream = human_stream()
    stream.write(prompt)
    stream.flush()
    line = sys.stdin.readline()
    if not line:
        return None
    return line.removesuffix("\n").removesuffix("\r")
