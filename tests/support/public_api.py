"""What authmesh exports, measured from the source (no imports, so optional extras need not
be installed): the public modules, the names each one offers, and how packages import each
other. ``python -m tests.support.public_api`` prints the count per module.

A module is public when no part of its dotted name starts with ``_`` (``__init__`` excepted).
Its exported names are its ``__all__`` when it has one, otherwise every top-level name it
defines (functions, classes, assignments) that does not start with ``_``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def is_public(self) -> bool:
        return not any(part.startswith("_") for part in self.name.split("."))


def modules() -> list[Module]:
    found = []
    for path in sorted((SRC / "authmesh").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.append(Module(".".join(parts), path, tree))
    return found


def declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == "__all__" for target in targets):
            assert node.value is not None
            return list(ast.literal_eval(node.value))
    return None


def defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def exported_names(module: Module) -> list[str]:
    listed = declared_all(module.tree)
    return sorted(defined_names(module.tree)) if listed is None else listed


def exports_per_module() -> dict[str, list[str]]:
    return {m.name: exported_names(m) for m in modules() if m.is_public}


def main() -> None:
    counts = exports_per_module()
    for name, names in counts.items():
        print(f"{len(names):4d}  {name}")
    print(f"{sum(map(len, counts.values())):4d}  exported names in {len(counts)} public modules")


if __name__ == "__main__":
    main()
