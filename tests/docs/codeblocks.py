"""Fenced code blocks of the Markdown docs, with the ``not-run`` marker that exempts one.

A block is exempt only when the line just before its opening fence is
``<!-- not-run: <reason> -->`` with a non-empty reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "doc_files", "extract"]

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language (first word of the info string), its text
    (indentation of the fence removed) and the reason it is not run, if it is marked."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, found anew on each run."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _closes(line: re.Match[str] | None, fence: str) -> bool:
    """A closing fence: the opening's character, at least as long, no info string."""
    return (
        line is not None
        and line["fence"][0] == fence[0]
        and len(line["fence"]) >= len(fence)
        and not line["info"].strip()
    )


def extract(path: Path) -> list[Block]:
    """Every fenced block of ``path``; an unclosed fence runs to the end of the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        info = opening["info"].strip()
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            if _closes(_FENCE.match(lines[end]), fence):
                break
            body.append(lines[end].removeprefix(indent))
            end += 1
        marker = _NOT_RUN.match(lines[index - 1]) if index > 0 else None
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                language=info.split()[0].lower() if info else "",
                code="\n".join(body) + "\n",
                not_run=marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return blocks
