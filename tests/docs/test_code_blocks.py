"""Every code block in README.md and docs/ runs, or says why it cannot.

Blocks are extracted anew on each run (:mod:`tests.docs.codeblocks`), so a block added
anywhere in the docs is picked up. By language:

* ``python``: run as a script by this interpreter, as the "worker" machine of the README: a
  home paired with a "server" home, which serves ``examples/fastapi_service.py`` on a free
  port. Service URLs in the docs (``https://orders.internal``, ``http://127.0.0.1:8000``) are
  pointed at that service; nothing else is rewritten.
* ``sh``/``bash``/``shell``: run by ``bash -e`` with this checkout's ``amesh`` on PATH, a real
  relay in ``AMESH_RELAY_URL``, and a fresh empty amesh home and ``HOME`` in a temp dir.
* ``json``, ``toml``, ``ini``, ``yaml``: parsed.
* anything else, and any block that cannot run here (servers, installers, two terminals),
  must carry ``<!-- not-run: <reason> -->`` on the line just before its fence; a block that is
  neither run nor marked fails.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.docs.codeblocks import ROOT, Block, doc_files, extract
from tests.support.docs import DocsWorld, clean_environ

BLOCKS = [block for path in doc_files() for block in extract(path)]
SHELLS = {"sh", "bash", "shell", "console"}
PARSERS = {
    "json": json.loads,
    "toml": tomllib.loads,
    "yaml": lambda text: list(yaml.safe_load_all(text)),
    "ini": lambda text: configparser.ConfigParser(strict=False, interpolation=None).read_string(
        text
    ),
}
BLOCK_TIMEOUT = 120
# Service URLs the docs use for the machine being called.
SERVICE_URLS = ("https://orders.internal", "http://127.0.0.1:8000")


def _run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def run_python(block: Block, world: DocsWorld, cwd: Path) -> None:
    code = block.code
    for url in SERVICE_URLS:
        code = code.replace(url, world.service_url)
    env = {
        **clean_environ(),
        "AUTH_MESH_DIR": str(world.worker_home),
        "AMESH_RELAY_URL": world.relay.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        "HOME": str(cwd),
    }
    _run([sys.executable, "-c", code], env, cwd)


def run_shell(block: Block, world: DocsWorld, cwd: Path) -> None:
    home = cwd / "amesh-home"
    env = {
        **clean_environ(),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "AUTH_MESH_DIR": str(home),
        "AMESH_RELAY_URL": world.relay.url,
        "HOME": str(cwd),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
    }
    _run(["bash", "-e", "-o", "pipefail", "-c", block.code], env, cwd)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_code_block_runs(block: Block, world: DocsWorld, tmp_path: Path) -> None:
    if block.not_run is not None:
        assert block.not_run, f"{block.name}: a not-run marker must say why"
        pytest.skip(f"not-run: {block.not_run}")
    if block.language == "python":
        run_python(block, world, tmp_path)
    elif block.language in SHELLS:
        run_shell(block, world, tmp_path)
    elif block.language in PARSERS:
        PARSERS[block.language](block.code)
    else:
        pytest.fail(
            f"{block.name}: a ```{block.language or '(no language)'} block can be neither run "
            "nor parsed; mark it with <!-- not-run: reason --> on the line before the fence"
        )


def test_the_extractor_sees_markers_languages_and_indented_fences(tmp_path: Path) -> None:
    doc = ROOT / "docs" / "_extractor_probe.md"
    text = (
        "intro\n<!-- not-run: needs a TPM -->\n```sh\namesh init\n```\n\n"
        "1. item\n\n   ```python\n   print('indented')\n   ```\n\n````md\n```\ninner\n```\n````\n"
    )
    probe = tmp_path / "probe.md"
    probe.write_text(text, encoding="utf-8")
    blocks = extract(probe)
    assert [(b.language, b.not_run) for b in blocks] == [
        ("sh", "needs a TPM"),
        ("python", None),
        ("md", None),
    ]
    assert blocks[1].code == "print('indented')\n"
    assert blocks[2].code == "```\ninner\n```\n"
    assert not doc.exists()
