"""The public API stays visible and short (docs/architecture.md, "Public API").

* every package's ``__init__`` has a docstring and an ``__all__`` whose names exist;
* packages import each other only downwards (the layer table below);
* across packages, a name the other package's front door exports is imported from the front
  door; its private ``_*.py`` modules are used only for names the front door does not export;
* inside a package, modules import their siblings' modules, never their own front door
  (that is what keeps the front doors free of import cycles);
* the number of exported names stays under a budget.
"""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.support.public_api import Module, declared_all, exports_per_module, modules

# The exported-name count was 626 before the packages marked their internals private.
EXPORTED_NAMES_BUDGET = 150

# Which packages each package may import (the data flow of docs/architecture.md).
# ``authmesh.errors`` is the error root, importable by every layer above core.
ROOT = {"authmesh.errors"}
MAY_IMPORT = {
    "authmesh.errors": set(),
    "authmesh.core": set(),
    "authmesh.store": {"authmesh.core"} | ROOT,
    "authmesh.relay": {"authmesh.core"} | ROOT,
    "authmesh.pairing": {"authmesh.core", "authmesh.store"} | ROOT,
    "authmesh.sdk": {"authmesh.core", "authmesh.store", "authmesh.pairing"} | ROOT,
    "authmesh.shell": {"authmesh.core", "authmesh.store", "authmesh.pairing"} | ROOT,
    "authmesh.cli": {
        "authmesh",
        "authmesh.core",
        "authmesh.store",
        "authmesh.pairing",
        "authmesh.sdk",
        "authmesh.shell",
    }
    | ROOT,
}

MODULES = modules()
FRONT_DOORS = {m.name: m for m in MODULES if m.is_package}


def package_of(module: str) -> str:
    """``authmesh.core.shell._session`` -> ``authmesh.core``; subpackages belong to their parent."""
    return ".".join(module.split(".")[:2])


def owning_front_door(module: str) -> str:
    """The package whose ``__init__`` speaks for ``module`` (the nearest one above it)."""
    parts = module.split(".")
    while ".".join(parts) not in FRONT_DOORS:
        parts.pop()
    return ".".join(parts)


def is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def imports_of(module: Module) -> list[tuple[int, str, list[str] | None]]:
    """(line, imported module, imported names or None for a whole-module import)."""
    found: list[tuple[int, str, list[str] | None]] = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if any(m.name == submodule for m in MODULES):
                    found.append((node.lineno, submodule, None))
                else:
                    found.append((node.lineno, node.module, [alias.name]))
    return [entry for entry in found if entry[1].split(".")[0] == "authmesh"]


def front_door_exports(package: str) -> set[str]:
    return set(declared_all(FRONT_DOORS[package].tree) or [])


@pytest.mark.parametrize("package", sorted(FRONT_DOORS))
def test_every_front_door_says_what_is_meant_to_be_used(package: str) -> None:
    door = FRONT_DOORS[package]
    assert ast.get_docstring(door.tree), f"{package}/__init__.py needs a docstring"
    names = declared_all(door.tree)
    assert names is not None, f"{package}/__init__.py needs an __all__"
    loaded = importlib.import_module(package)
    missing = [name for name in names if not hasattr(loaded, name)]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"


def test_packages_import_only_downwards() -> None:
    offenders = []
    for module in MODULES:
        source = package_of(module.name)
        if module.name == "authmesh":
            continue  # the top-level façade re-exports the SDK lazily
        for line, target, _ in imports_of(module):
            wanted = package_of(target)
            if wanted != source and wanted not in MAY_IMPORT[source]:
                offenders.append(f"{module.name}:{line} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_other_packages_are_used_through_their_front_doors() -> None:
    offenders = []
    for module in MODULES:
        for line, target, names in imports_of(module):
            if package_of(target) == package_of(module.name) or not is_private(target):
                continue
            where = f"{module.name}:{line}"
            door = owning_front_door(target)
            if names is None:
                offenders.append(f"{where} imports the private module {target} whole")
                continue
            exported = sorted(set(names) & front_door_exports(door))
            if exported:
                offenders.append(f"{where} imports {exported} from {target}; use {door}")
    assert not offenders, "\n".join(offenders)


def test_modules_do_not_import_their_own_front_door() -> None:
    offenders = []
    for module in MODULES:
        if module.is_package:
            continue
        own_doors = {d for d in FRONT_DOORS if package_of(d) == package_of(module.name)}
        for line, target, names in imports_of(module):
            if target in own_doors and names is not None:
                offenders.append(f"{module.name}:{line} imports {names} from {target}")
    assert not offenders, "\n".join(offenders)


def test_exported_names_stay_within_budget() -> None:
    count = sum(map(len, exports_per_module().values()))
    assert count <= EXPORTED_NAMES_BUDGET, (
        f"{count} exported names (budget {EXPORTED_NAMES_BUDGET}): mark new internal modules "
        "private (_name.py) or keep new names out of __all__"
    )
