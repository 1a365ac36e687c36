"""The CLI beyond the reference transcripts: our additions, edge cases and wall times."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pexpect

from authmesh.cli._exit_codes import ExitCode
from authmesh.cli._output import format_error, wrap_like_oclif
from authmesh.pairing._errors import MESSAGES
from tests.support.cli import AmeshRunner, Device, unwrapped, write_state
from tests.support.relayproc import RelayProcess, free_port
from tests.support.vectorfiles import section

HARDWARE_HOME = section("sdk.json", "amesh_home.hardware_home.files")
EMPTY_LIST = (
    "\n  This device\n  " + "─" * 55 + "\n  Device ID     : {id}\n  Friendly Name : Laptop\n"
    "  Backend       : Encrypted file (software-only — not hardware-bound)\n"
    "  Created       : {date}\n\n  No trusted devices yet.\n"
    "  Pair with another device using `amesh listen` + `amesh invite`.\n\n"
)


def test_list_with_no_devices_creates_the_sealed_file(
    amesh: AmeshRunner, make_device: Callable[[str], Device]
) -> None:
    device = make_device("Laptop")
    identity = json.loads((device.home / "identity.json").read_text())
    started = time.monotonic()
    result = amesh(["list"], device.home)
    elapsed = time.monotonic() - started
    print(f"amesh list (encrypted-file, includes key unlock): {elapsed:.2f} s")
    assert result.returncode == 0, result.stderr
    expected = EMPTY_LIST.format(id=identity["deviceId"], date=identity["createdAt"][:10])
    assert result.stdout == expected
    assert oct((device.home / "allow_list.json").stat().st_mode & 0o777) == "0o600"


def test_list_on_a_hardware_home_needs_no_tpm(amesh: AmeshRunner, home: Path) -> None:
    """A tpm2 identity's allow list is sealed with the .hmac file, so `list` works anywhere."""
    write_state(home, HARDWARE_HOME)
    result = amesh(["list"], home)
    assert result.returncode == 0, result.stderr
    assert "  Backend       : TPM 2.0\n" in result.stdout
    assert "  Trusted Devices (1)\n" in result.stdout
    assert (
        "  am_zqljod6_GvA9EvUV  Controller One            [controller]   added 2026-03-28\n"
        in result.stdout
    )


def test_list_json(amesh: AmeshRunner, home: Path) -> None:
    write_state(home, HARDWARE_HOME)
    document = json.loads(amesh(["list", "--json"], home).stdout)
    assert document["device"]["deviceId"] == "am_BwGEgyspBnZmApay"
    assert [d["friendlyName"] for d in document["devices"]] == ["Controller One"]


def test_revoke_yes_flag_skips_the_question(amesh: AmeshRunner, home: Path) -> None:
    write_state(home, HARDWARE_HOME)
    result = amesh(["revoke", "am_zqljod6_GvA9EvUV", "--yes"], home, stdin="")
    assert result.returncode == 0, result.stderr
    assert "Are you sure" not in result.stdout
    assert "  am_zqljod6_GvA9EvUV removed from allow list.\n" in result.stdout
    assert json.loads(amesh(["list", "--json"], home).stdout)["devices"] == []


def test_revoke_without_a_terminal_or_yes_is_refused(amesh: AmeshRunner, home: Path) -> None:
    """A script must never believe a device was revoked: no question can be asked, so no
    answer (not even "y" on a pipe) counts, and the entry stays."""
    write_state(home, HARDWARE_HOME)
    for stdin in ("", "y\n"):
        result = amesh(["revoke", "am_zqljod6_GvA9EvUV"], home, stdin=stdin)
        assert (result.returncode, result.stdout) == (ExitCode.USAGE, "")
        assert "pass --yes" in unwrapped(result.stderr)
    assert len(json.loads(amesh(["list", "--json"], home).stdout)["devices"]) == 1


def test_relay_url_precedence_and_validation(
    amesh: AmeshRunner, make_device: Callable[[str], Device], module_relay: RelayProcess
) -> None:
    device = make_device("Laptop")
    dead = f"ws://127.0.0.1:{free_port()}/ws"
    live = {"AMESH_RELAY_URL": module_relay.url}
    # The global flag beats the environment: the dead relay is the one contacted.
    global_flag = amesh(["--relay", dead, "invite", "123456-1234-5678"], device.home, env=live)
    assert f"Could not reach the relay at {dead}: " in unwrapped(global_flag.stderr)
    # The command's flag beats the global one.
    both = amesh(
        ["--relay", dead, "invite", "123456-1234-5678", "--relay", module_relay.url], device.home
    )
    assert MESSAGES["code_not_found"] in unwrapped(both.stderr)
    bad = amesh(["invite", "123456-1234-5678", "--relay", "https://relay.example"], device.home)
    assert bad.returncode == ExitCode.USAGE
    assert "not a WebSocket URL" in bad.stderr


def test_interrupting_listen_is_a_clean_exit(
    make_device: Callable[[str], Device], module_relay: RelayProcess
) -> None:
    device = make_device("Server")
    child = device.spawn("listen", relay=module_relay)
    child.expect(rb"Pairing code: \d{6}")
    os.kill(child.pid, signal.SIGINT)
    child.expect("Interrupted")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert b"Traceback" not in (child.before or b"")
    assert device.entries() == []


def test_unexpected_errors_are_one_sentence(amesh: AmeshRunner, home: Path) -> None:
    (home / "identity.json").write_text("{not json")
    result = amesh(["list"], home)
    assert result.returncode == ExitCode.FAILED
    assert result.stderr.startswith(" ›   Error: identity.json is not valid JSON")
    assert "Traceback" not in result.stderr


def test_oclif_wrapping_matches_wrap_ansi() -> None:
    """Spot checks of the wrap-ansi port beyond the transcripts: exact fit and long words."""
    assert wrap_like_oclif("a" * 74, 74) == "a" * 74
    assert wrap_like_oclif("x " + "a" * 80, 74) == "x " + "a" * 72 + "\n" + "a" * 8
    assert format_error("short") == " ›   Error: short"


def test_key_unlock_wall_time(make_device: Callable[[str], Device]) -> None:
    """The encrypted-file key is unlocked (Argon2id, 64 MiB) once per process (W8)."""
    from authmesh.store._context import load_context
    from authmesh.store._home import AmeshHome

    device = make_device("Laptop")
    environ = {"AUTH_MESH_DIR": str(device.home)}
    started = time.monotonic()
    context = load_context(AmeshHome.from_env(environ), environ)
    signer = context.signer
    unlocked = time.monotonic() - started
    started = time.monotonic()
    for _ in range(100):
        signer.sign(b"message")
    per_signature = (time.monotonic() - started) / 100
    print(f"key unlock: {unlocked:.2f} s; then {per_signature * 1000:.2f} ms per signature")
    assert per_signature < 0.05  # no Argon2 per signature


def test_help_and_version_exit_zero(amesh: AmeshRunner, home: Path) -> None:
    version = amesh(["--version"], home)
    assert (version.returncode, version.stdout.startswith("amesh, version ")) == (0, True)
    bare = amesh([], home)
    assert bare.returncode == 0
    for command in ("init", "list", "revoke", "listen", "invite", "provision", "bootstrap"):
        assert f"  {command} " in bare.stdout
