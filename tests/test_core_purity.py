"""``authmesh.core`` imports with only ``cryptography`` and does no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

CORE_DIR = Path(__file__).resolve().parents[1] / "src" / "authmesh" / "core"
OPTIONAL_PACKAGES = (
    "websockets",
    "click",
    "rich",
    "httpx",
    "requests",
    "redis",
    "prometheus_client",
    "fastapi",
    "starlette",
    "flask",
    "django",
    "uvicorn",
    "pexpect",
    "hypothesis",
)
IO_MODULES = {"os", "socket", "subprocess", "asyncio", "pathlib", "shutil", "tempfile", "fcntl"}


def test_core_imports_without_optional_dependencies() -> None:
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        blocked = {OPTIONAL_PACKAGES!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError(f"optional dependency {{name}} imported by core")
                return None

        sys.meta_path.insert(0, Blocker())
        import authmesh.core
        for info in pkgutil.walk_packages(authmesh.core.__path__, "authmesh.core."):
            importlib.import_module(info.name)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_core_modules_do_no_io() -> None:
    offenders = []
    for path in CORE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                offenders.append(f"{path.name}: open()")
            offenders.extend(
                f"{path.name}: imports {name}" for name in names if name.split(".")[0] in IO_MODULES
            )
    assert not offenders, offenders
