"""Dockerfile.relay, replayed without Docker.

Docker is not available on the test machines, so this test reads the real Dockerfile and runs its
steps itself, inside a scratch directory that stands for the image's root filesystem:

* the build context is the repository filtered through the real ``.dockerignore``;
* the build stage's ``WORKDIR``/``COPY``/``ENV`` are applied and its ``RUN`` lines executed
  verbatim with ``/bin/sh`` (so ``pip install ".[redis]"`` really installs from the copied
  context into a fresh virtual environment);
* the runtime stage's ``ENV`` are applied, its ``COPY --from`` must keep the virtual environment
  at the same path (virtual environments cannot move), and its only ``RUN`` must create the
  non-root user that ``USER`` names (creating users needs root, so that line is checked, not run);
* the ``CMD`` is started with the image's environment (``PORT`` overridden, as ``docker run -e``
  would), ``/health`` must answer, the ``HEALTHCHECK`` command must exit 0, ``STOPSIGNAL`` must
  end the relay with exit code 0, after which the ``HEALTHCHECK`` must fail;
* the ``redis`` client must be installed in the image's virtual environment, and the ``CMD``
  started again with ``AMESH_REDIS_URL`` pointing at a real redis-server must become healthy.

Absolute paths written in the Dockerfile (``WORKDIR``, ``ENV`` values, ``COPY`` targets) are
placed under the scratch root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.http_probe import get_health
from tests.support.redisproc import RedisServer
from tests.support.relayproc import RelayProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile.relay"
# What the build host passes to `docker build` so that pip can reach its index.
HOST_NETWORK_SETTINGS = re.compile(r"PIP_\w+|\w+_PROXY|SSL_CERT_\w+|REQUESTS_CA_BUNDLE", re.I)
# Printed by the image's Python: where the relay package and the redis client were installed.
INSTALLED_MODULES = "import authmesh.relay, redis; print(authmesh.__file__); print(redis.__file__)"


def stages() -> tuple[dockerfile.Stage, dockerfile.Stage]:
    parsed = dockerfile.parse(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(parsed) == 2, "Dockerfile.relay should have a build stage and a runtime stage"
    return parsed[0], parsed[1]


def python_version(image: str) -> tuple[int, int]:
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", image)
    assert match, f"{image} is not an official slim Python image with a pinned minor version"
    return int(match.group(1)), int(match.group(2))


def test_image_shape() -> None:
    build, runtime = stages()
    assert build.name
    assert python_version(build.image) >= (3, 11)
    assert runtime.image == build.image, "both stages need the same Python for the venv"
    user = runtime.one("USER").text
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric (runAsNonRoot) and not root"
    assert gid.isdigit() and int(gid) != 0
    assert runtime.one("EXPOSE").text == "3001"
    env = dict(pair for i in runtime.all("ENV") for pair in dockerfile.parse_env(i))
    assert env["PORT"] == "3001"
    assert env["HOST"] == "0.0.0.0"
    assert "AMESH_TRUST_PROXY" not in env, "trusting X-Forwarded-For must be a deployment choice"
    assert runtime.one("CMD").command() == ["amesh-relay"]
    assert runtime.one("STOPSIGNAL").text == "SIGTERM"
    healthcheck = runtime.one("HEALTHCHECK")
    assert healthcheck.text.startswith("["), "exec form: the image has no need for a shell"
    assert healthcheck.command()[0] == "python", "the slim image has no curl"
    assert set(healthcheck.flags) >= {"interval", "timeout", "retries"}


class ScratchImage:
    """The image's root filesystem and environment while replaying the Dockerfile."""

    def __init__(self, root: Path, context: Path) -> None:
        self.root = root
        self.context = context
        self.workdir = root
        # The base image's PATH is the host's: that is where the host's Python lives.
        self.env = {"PATH": os.environ["PATH"]}

    def path(self, container_path: str) -> Path:
        if container_path.startswith("/"):
            return self.root / container_path.lstrip("/")
        return self.workdir / container_path

    def apply_env(self, instruction: dockerfile.Instruction) -> None:
        updates = {}
        for name, raw in dockerfile.parse_env(instruction):
            value = dockerfile.expand(raw, self.env)
            updates[name] = str(self.path(value)) if raw.startswith("/") else value
        self.env.update(updates)

    def apply_copy(self, instruction: dockerfile.Instruction) -> None:
        *sources, target = instruction.text.split()
        destination = self.path(target)
        for source in sources:
            origin = self.context / source
            assert origin.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
            if origin.is_dir():
                shutil.copytree(origin, destination, dirs_exist_ok=True)
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination / origin.name)


def build_context(scratch: Path) -> Path:
    context = scratch / "context"
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8")
    for file in dockerfile.context_files(REPO, ignore):
        target = context / file.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    return context


def replay_build(image: ScratchImage, stage: dockerfile.Stage) -> None:
    network = {k: v for k, v in os.environ.items() if HOST_NETWORK_SETTINGS.fullmatch(k)}
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            image.apply_env(instruction)
        elif instruction.keyword == "WORKDIR":
            image.workdir = image.path(instruction.text)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            assert "from" not in instruction.flags
            image.apply_copy(instruction)
        elif instruction.keyword == "RUN":
            result = subprocess.run(
                instruction.command(),
                cwd=image.workdir,
                env={**network, **image.env},
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert result.returncode == 0, f"RUN {instruction.text} failed:\n{result.stderr}"
        else:
            raise AssertionError(f"unexpected {instruction.keyword} in the build stage")


def replay_runtime(image: ScratchImage, build: dockerfile.Stage, stage: dockerfile.Stage) -> None:
    image.workdir = image.root
    image.env = {"PATH": os.environ["PATH"]}
    uid, _, gid = stage.one("USER").text.partition(":")
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            image.apply_env(instruction)
        elif instruction.keyword == "COPY":
            assert instruction.flags.get("from") == build.name
            source, target = instruction.text.split()
            assert source == target, "a virtual environment only works at the path it was made"
            assert image.path(source).is_dir(), f"{source} was not produced by the build stage"
        elif instruction.keyword == "RUN":
            words = instruction.text.split()
            assert words[0] == "useradd", "the runtime stage should only create the user"
            assert words[words.index("--uid") + 1] == uid
            assert "--user-group" in words or gid == uid
            assert words[words.index("--shell") + 1] == "/usr/sbin/nologin"


def healthcheck(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode


def test_build_and_run_steps(tmp_path: Path, redis_server: RedisServer) -> None:
    build, runtime = stages()
    image = ScratchImage(tmp_path / "rootfs", build_context(tmp_path))
    image.root.mkdir()
    replay_build(image, build)
    replay_runtime(image, build, runtime)

    venv = Path(image.env["VIRTUAL_ENV"])
    # The redis extra is part of the image, so AMESH_REDIS_URL works in any container.
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", INSTALLED_MODULES],
        env=image.env,
        cwd=image.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(installed) == 2
    for module_file in installed:
        assert Path(module_file).is_relative_to(venv), f"{module_file} is not in the image's venv"

    port = free_port()
    env = {**image.env, "PORT": str(port)}
    command = runtime.one("CMD").command()
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None, f"{command[0]} is not installed; is the entry point declared?"
    assert Path(executable).is_relative_to(venv)
    health_url = f"http://127.0.0.1:{port}/health"
    probe = runtime.one("HEALTHCHECK").command()
    relay = RelayProcess(env, command=command, cwd=image.root).start()
    try:
        status, body = get_health(health_url)
        assert status == 200
        assert body["status"] == "ok"
        assert isinstance(body["sessions"], int)
        assert healthcheck(probe, env) == 0

        stop_signal = getattr(signal, runtime.one("STOPSIGNAL").text)
        assert relay.stop(stop_signal) == 0, "the relay should exit 0 on docker stop"
    finally:
        relay.kill()
    assert healthcheck(probe, env) != 0, "HEALTHCHECK must fail once the relay is gone"

    # The same image as one instance of several: it reaches a real Redis and reports healthy.
    clustered = RelayProcess(
        {**env, "AMESH_REDIS_URL": redis_server.url()}, command=command, cwd=image.root
    ).start()
    try:
        assert get_health(health_url)[0] == 200
        assert healthcheck(probe, env) == 0
    finally:
        clustered.stop()


@pytest.mark.parametrize(
    ("ignored", "kept"),
    [
        (".venv/bin/python", "src/authmesh/__init__.py"),
        ("src/authmesh/__pycache__/x.pyc", "pyproject.toml"),
        (".git/HEAD", "README.md"),
        ("tests/deploy/test_dockerfile.py", "src/authmesh/relay/__init__.py"),
    ],
)
def test_dockerignore_model(tmp_path: Path, ignored: str, kept: str) -> None:
    for name in (ignored, kept):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8")
    files = {p.relative_to(tmp_path).as_posix() for p in dockerfile.context_files(tmp_path, ignore)}
    assert files == {kept}
