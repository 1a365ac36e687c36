"""The vector copies are intact and every vector is either exercised or pending."""

from __future__ import annotations

import pytest

from tests.conformance import ledger
from tests.support.vectorfiles import (
    SHARED_VECTOR_DIR,
    VECTOR_DIR,
    VECTOR_FILES,
    load,
    vector_lists,
)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_copy_matches_shared_vectors(name: str) -> None:
    shared = SHARED_VECTOR_DIR / name
    if not SHARED_VECTOR_DIR.is_dir():
        pytest.skip("../shared/vectors is not present on this clone")
    assert (VECTOR_DIR / name).read_bytes() == shared.read_bytes()


def test_no_unknown_vector_files() -> None:
    assert sorted(p.name for p in VECTOR_DIR.glob("*.json")) == sorted(VECTOR_FILES)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_every_vector_list_is_accounted_for(name: str) -> None:
    """Each list of vectors has an expected count equal to its length, or is pending."""
    expected = ledger.expected_counts().get(name, {})
    pending = ledger.pending().get(name, {})
    unaccounted = []
    for path, length in vector_lists(load(name)).items():
        if path in pending or any(p and path.startswith(p + ".") for p in pending):
            continue
        if expected.get(path) != length:
            unaccounted.append(f"{path} ({length} vectors, expected {expected.get(path)})")
    assert not unaccounted, f"{name}: vectors neither exercised nor pending: {unaccounted}"


def test_pending_sections_name_an_issue() -> None:
    for file, sections in ledger.pending().items():
        for section, reason in sections.items():
            assert reason.startswith("issue "), (file, section, reason)
