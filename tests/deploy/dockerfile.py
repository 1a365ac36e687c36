"""A small model of the Dockerfile and .dockerignore syntax our deployment files use.

Docker does not run on the test machines, so the deployment tests read ``Dockerfile.relay`` with
this module and replay its steps themselves. Only the syntax we use is supported (line
continuations, comments, ``--flag=value`` options, exec and shell forms, ``ENV k=v`` pairs with
``$VAR``/``${VAR}`` expansion, ``*``/``**``/``?`` ignore patterns with ``!`` exceptions); anything
else raises ``ValueError`` so a new construct cannot be silently misread.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Instruction", "Stage", "context_files", "expand", "parse", "parse_env"]

_KEYWORDS = {
    "FROM",
    "ENV",
    "WORKDIR",
    "COPY",
    "RUN",
    "USER",
    "EXPOSE",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "CMD",
}
_FLAG = re.compile(r"--([a-z-]+)=(\S+)\s+")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: upper-case keyword, its ``--name=value`` flags and the remaining text."""

    keyword: str
    flags: Mapping[str, str]
    text: str

    def command(self) -> list[str]:
        """The argument vector of a RUN/CMD (exec form as written, shell form via /bin/sh)."""
        if self.text.startswith("["):
            argv = json.loads(self.text)
            if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
                raise ValueError(f"{self.keyword} exec form must be a JSON list of strings")
            return argv
        return ["/bin/sh", "-c", self.text]


@dataclass
class Stage:
    """A build stage: its ``FROM`` image, optional ``AS`` name and instructions after FROM."""

    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        if len(found) != 1:
            raise ValueError(f"stage {self.name or self.image} has {len(found)} {keyword} lines")
        return found[0]


def _logical_lines(text: str) -> Iterator[str]:
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        yield " ".join(part for part in pending if part)
        pending = []
    if pending:
        raise ValueError("Dockerfile ends inside a line continuation")


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword not in _KEYWORDS:
            raise ValueError(f"unsupported Dockerfile instruction {keyword}")
        flags: dict[str, str] = {}
        rest = rest.strip() + " "
        while match := _FLAG.match(rest):
            flags[match.group(1)] = match.group(2)
            rest = rest[match.end() :]
        rest = rest.strip()
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            stages.append(Stage(image=image.strip(), name=name.strip() or None))
            continue
        if not stages:
            raise ValueError(f"{keyword} before the first FROM")
        if keyword == "HEALTHCHECK":
            if not rest.startswith("CMD "):
                raise ValueError("HEALTHCHECK must be HEALTHCHECK [options] CMD ...")
            rest = rest[len("CMD ") :].strip()
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def expand(value: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced from ``env`` (unset names become empty, as in Docker)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def parse_env(instruction: Instruction) -> list[tuple[str, str]]:
    """The ``(name, unexpanded value)`` pairs of an ``ENV k=v ...`` instruction."""
    pairs = []
    for word in shlex.split(instruction.text, posix=True):
        name, sep, value = word.partition("=")
        if not sep:
            raise ValueError("ENV must use the name=value form")
        pairs.append((name, value))
    return pairs


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def context_files(root: Path, dockerignore: str) -> list[Path]:
    """Files of the build context under ``root`` that ``.dockerignore`` lets through.

    As in Docker, the last matching pattern wins and a pattern matching a directory also
    matches everything below it.
    """
    rules = []
    for raw in dockerignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, pattern, _ignore_regex(pattern)))

    def excluded(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negated, _, regex in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                verdict = not negated
        return verdict

    def may_hold_exceptions(relative: str) -> bool:
        return any(
            negated and (any(c in pattern for c in "*?") or pattern.startswith(relative + "/"))
            for negated, pattern, _ in rules
        )

    # Walk instead of rglob so that excluded trees such as .venv and .git are not descended.
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        subdirs[:] = [
            d
            for d in subdirs
            if not excluded(rel := (here / d).relative_to(root).as_posix())
            or may_hold_exceptions(rel)
        ]
        found.extend(
            here / f for f in files if not excluded((here / f).relative_to(root).as_posix())
        )
    return sorted(found)
