"""docs/self-hosting.md: every relay setting with its real default, and no dead links."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from authmesh.relay._config import SETTINGS, RelayConfig, Setting

DOC = Path(__file__).resolve().parents[2] / "docs" / "self-hosting.md"
ROW = re.compile(r"^\| `(?P<env>[A-Z_]+)` \| `?(?P<default>[^|`]*)`? \|", re.M)
# Defaults the table states in words rather than as the dataclass value.
DESCRIBED_DEFAULTS = {"AMESH_TRUST_PROXY": "unset"}


def documented_defaults() -> dict[str, str]:
    return {m["env"]: m["default"].strip() for m in ROW.finditer(DOC.read_text("utf-8"))}


def rendered(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, str) else str(value)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_setting_documented_with_its_default(setting: Setting) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(RelayConfig)}
    table = documented_defaults()
    assert setting.env in table, f"{setting.env} is missing from the table in {DOC.name}"
    assert table[setting.env] == DESCRIBED_DEFAULTS.get(
        setting.env, rendered(defaults[setting.name])
    )


def test_no_stale_rows() -> None:
    known = {s.env for s in SETTINGS}
    assert set(documented_defaults()) <= known


def test_relative_links_resolve() -> None:
    """Every file the guide links to exists (docs/benchmarks.md included)."""
    targets = re.findall(r"\]\((?!https?:|#)([^)#]+)", DOC.read_text("utf-8"))
    assert targets
    missing = [t for t in targets if not (DOC.parent / t).exists()]
    assert not missing, f"{DOC.name} links to missing files: {missing}"


def test_anchors_resolve() -> None:
    text = DOC.read_text("utf-8")
    headings = {
        re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert anchors <= headings, f"dangling anchors: {sorted(anchors - headings)}"


# docs/protocol.md and docs/security.md (H9): links, anchors across files, cited tests.
DOCS = DOC.parent
REPO = DOCS.parent
REFERENCE_DOCS = ("protocol.md", "security.md")
LINK = re.compile(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)")
CITED_TEST = re.compile(r"`((?:[a-z_]+/)+test_[a-z0-9_]+\.py)(?:::(test_[a-z0-9_]+)(\*)?)?`")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", path.read_text("utf-8"), re.M)}


@pytest.mark.parametrize("name", REFERENCE_DOCS)
def test_links_and_anchors_resolve_across_files(name: str) -> None:
    doc = DOCS / name
    problems = []
    for target, anchor in LINK.findall(doc.read_text("utf-8")):
        linked = (doc.parent / target) if target else doc
        if not linked.exists():
            problems.append(f"missing file {target}")
        elif anchor and anchor not in anchors_of(linked):
            problems.append(f"missing anchor {target}#{anchor}")
    assert not problems, f"{name}: {problems}"


def test_security_register_cites_existing_tests() -> None:
    """Every `dir/test_x.py[::test_name]` the weakness register names exists."""
    text = (DOCS / "security.md").read_text("utf-8")
    cited = CITED_TEST.findall(text)
    assert len(cited) > 40
    missing = []
    for file_name, test_name, is_prefix in cited:
        path = REPO / "tests" / file_name
        if not path.exists():
            missing.append(file_name)
            continue
        if test_name:
            pattern = f"def {test_name}" + ("" if is_prefix else r"\b")
            if not re.search(pattern, path.read_text("utf-8")):
                missing.append(f"{file_name}::{test_name}")
    assert not missing, f"security.md cites tests that do not exist: {missing}"
