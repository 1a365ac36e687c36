"""Counts the reference vectors each conformance test really exercised.

Tests call :func:`record` once per vector they check. At the end of a run that
collected the whole conformance suite, ``conftest.py`` compares the counts with
``expected_counts.json`` and fails the session if any section dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

EXPECTED_COUNTS_FILE = Path(__file__).with_name("expected_counts.json")
PENDING_FILE = Path(__file__).with_name("pending.json")

_exercised: dict[tuple[str, str], set[str]] = defaultdict(set)


def record(file: str, section: str, vector_id: object) -> None:
    """Note that vector ``vector_id`` of ``section`` in ``file`` was checked."""
    _exercised[(file, section)].add(str(vector_id))


def counts() -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = defaultdict(dict)
    for (file, section), ids in sorted(_exercised.items()):
        result[file][section] = len(ids)
    return dict(result)


def expected_counts() -> dict[str, dict[str, int]]:
    data: dict[str, dict[str, int]] = json.loads(EXPECTED_COUNTS_FILE.read_text())
    return data


def pending() -> dict[str, dict[str, str]]:
    """Sections whose vectors belong to a later issue: file -> section -> reason."""
    data: dict[str, dict[str, str]] = json.loads(PENDING_FILE.read_text())
    return data


def shortfalls() -> list[str]:
    """Sections exercised fewer times than ``expected_counts.json`` demands."""
    seen = counts()
    problems = []
    for file, sections in expected_counts().items():
        for section, expected in sections.items():
            got = seen.get(file, {}).get(section, 0)
            if got < expected:
                problems.append(f"{file} {section}: {got} of {expected} vectors exercised")
    return problems
