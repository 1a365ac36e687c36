"""``amesh listen --v2`` / ``--legacy`` + ``amesh invite`` end to end: two homes, a real
relay process, real ptys (pairing v3, the default, is in ``test_pairing_v3_e2e.py``).

Both commands run as separate processes driven through pseudo-terminals (pexpect); the
operator's typing is the SAS sent to the target's prompt. Every wait is a pexpect expectation
or a polled condition with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from authmesh.cli._exit_codes import ExitCode
from authmesh.pairing._errors import MESSAGES
from authmesh.pairing._interactive import SAS_ATTEMPTS
from tests.support.cli import AmeshRunner, Device, fails_with, unwrapped
from tests.support.relayproc import RelayFactory, RelayProcess, free_port

PAIRING_CODE = re.compile(rb"Pairing code: (\d{6})")
SAS_LINE = re.compile(rb"Verification code: (\d{6})")
SAS_PROMPT = "Enter the verification code shown on the controller:"


@pytest.fixture
def pair(make_device: Callable[..., Device]) -> tuple[Device, Device]:
    return make_device("Server"), make_device("Laptop")


def start_pairing(
    target: Device,
    controller: Device,
    relay: RelayProcess,
    children: list[pexpect.spawn],
    *flags: str,
    target_asks: str = SAS_PROMPT,
    invite_flags: tuple[str, ...] = ("--no-confirm",),
) -> tuple[pexpect.spawn, pexpect.spawn, str]:
    """Run listen and invite (``--v2`` unless ``--legacy`` is given) up to the SAS being shown
    and the target asking ``target_asks``; returns both children and the SAS. With
    ``--legacy`` both must print the warning first (and ``invite_flags`` are not used)."""
    if "--legacy" in flags:
        invite_flags = ()
    else:
        flags = ("--v2", *flags)
    listener = target.spawn("listen", *flags, relay=relay)
    children.append(listener)
    if "--legacy" in flags:
        listener.expect("a hostile relay")
    listener.expect(PAIRING_CODE)
    code = listener.match.group(1).decode()
    inviter = controller.spawn("invite", code, *flags, *invite_flags, relay=relay)
    children.append(inviter)
    if "--legacy" in flags:
        inviter.expect("a hostile relay")
    inviter.expect(SAS_LINE)
    sas = inviter.match.group(1).decode()
    listener.expect(target_asks)
    return listener, inviter, sas


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -1)


def test_v2_pairing_happy_path(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    started = time.monotonic()
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    handshake_seconds = time.monotonic() - started
    listener.sendline(sas)
    typed = time.monotonic()
    listener.expect("is now a trusted controller of this device")
    inviter.expect("added to the allow list as a target")
    confirm_seconds = time.monotonic() - typed
    assert finish(listener) == 0
    assert finish(inviter) == 0
    print(f"pairing on loopback: {handshake_seconds:.2f} s to SAS, {confirm_seconds:.2f} s after")

    [on_target] = target.allow_list(amesh)
    assert on_target["deviceId"] == controller.device_id
    assert (on_target["role"], on_target["friendlyName"]) == ("controller", "Laptop")
    assert on_target["protocol"] == 2
    [on_controller] = controller.allow_list(amesh)
    assert on_controller["deviceId"] == target.device_id
    assert (on_controller["role"], on_controller["friendlyName"]) == ("target", "Server")
    assert on_controller["protocol"] == 2


@pytest.mark.parametrize("answer", ["y", "n"])
def test_v2_invite_asks_the_operator_before_saving_by_default(
    amesh: AmeshRunner,
    pair: tuple[Device, Device],
    module_relay: RelayProcess,
    children: list,
    answer: str,
) -> None:
    """Issue 10 item 7: `--confirm` is v2's default, closing the gap of a relay forging the
    target's acceptance (docs/pairing.md): the controller saves the target only when its
    operator saw the target say it paired."""
    target, controller = pair
    listener, inviter, sas = start_pairing(
        target, controller, module_relay, children, invite_flags=()
    )
    listener.sendline(sas)
    listener.expect("is now a trusted controller of this device")
    inviter.expect("is now a trusted controller\\? \\(y/N\\)")
    inviter.sendline(answer)
    if answer == "y":
        inviter.expect("added to the allow list as a target")
        assert finish(inviter) == 0
        assert [d["deviceId"] for d in controller.entries()] == [target.device_id]
    else:
        fails_with(inviter, MESSAGES["operator_declined"])
        assert controller.entries() == []
    assert finish(listener) == 0


@pytest.mark.parametrize(
    "flags", [("--legacy", "--confirm"), ("--confirm",), ("--no-confirm",), ("--v2", "--legacy")]
)
def test_confirm_flags_apply_to_v2_only(
    amesh: AmeshRunner,
    pair: tuple[Device, Device],
    module_relay: RelayProcess,
    flags: tuple[str, ...],
) -> None:
    _, controller = pair
    code = "123456" if "--legacy" in flags else "123456-1234-5678"
    result = amesh(
        ["invite", code, *flags], controller.home, env={"AMESH_RELAY_URL": module_relay.url}
    )
    assert result.returncode == ExitCode.USAGE
    expected = "--v2 and --legacy" if "--v2" in flags else "apply to --v2 only"
    assert expected in unwrapped(result.stderr)


def test_repairing_the_same_peer_updates_instead_of_crashing(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    """pairing.md W7: the reference crashes with "already in allow list" on a re-pair."""
    target, controller = pair
    for _ in range(2):
        listener, inviter, sas = start_pairing(target, controller, module_relay, children)
        listener.sendline(sas)
        assert finish(listener) == 0
        assert finish(inviter) == 0
    assert [d["deviceId"] for d in target.entries()] == [controller.device_id]
    assert [d["deviceId"] for d in controller.entries()] == [target.device_id]


def test_wrong_sas_writes_nothing_on_either_side(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    wrong = f"{(int(sas) + 1) % 1_000_000:06d}"
    for left in range(SAS_ATTEMPTS - 1, 0, -1):
        listener.sendline(wrong)
        listener.expect(f"type it again \\({left} attempts? left\\)")
        listener.expect(SAS_PROMPT)
    listener.sendline(wrong)
    fails_with(listener, MESSAGES["sas_mismatch"])
    # v2's explicit confirmation: the controller learns the target refused (pairing.md W7).
    fails_with(inviter, MESSAGES["peer_rejected"])
    assert target.entries() == []
    assert controller.entries() == []


def test_a_typo_in_the_sas_can_be_retyped(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    """Issue 13: the SAS is fixed once committed, so a typo costs an attempt, not the pairing."""
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    listener.sendline(f"{(int(sas) + 1) % 1_000_000:06d}")
    listener.expect(f"type it again \\({SAS_ATTEMPTS - 1} attempts left\\)")
    listener.expect(SAS_PROMPT)
    listener.sendline(sas)
    listener.expect("is now a trusted controller of this device")
    inviter.expect("added to the allow list as a target")
    assert finish(listener) == 0 and finish(inviter) == 0
    assert [d["deviceId"] for d in target.entries()] == [controller.device_id]
    assert [d["deviceId"] for d in controller.entries()] == [target.device_id]


def test_wrong_code_is_one_clear_sentence(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess
) -> None:
    _, controller = pair
    env = {"AMESH_RELAY_URL": module_relay.url}
    result = amesh(["invite", "--v2", "123456"], controller.home, env=env)
    assert result.returncode == ExitCode.FAILED
    assert MESSAGES["code_not_found"] in unwrapped(result.stderr)
    assert "Traceback" not in result.stderr
    malformed = amesh(["invite", "--v2", "12345"], controller.home, env=env)
    assert malformed.returncode == ExitCode.USAGE
    assert MESSAGES["invalid_code"] in unwrapped(malformed.stderr)


def test_relay_unreachable(amesh: AmeshRunner, pair: tuple[Device, Device]) -> None:
    _, controller = pair
    url = f"ws://127.0.0.1:{free_port()}/ws"
    result = amesh(["invite", "123456-1234-5678"], controller.home, env={"AMESH_RELAY_URL": url})
    assert result.returncode == ExitCode.RELAY
    assert f"Could not reach the relay at {url}: connection refused" in unwrapped(result.stderr)
    assert result.stderr.count("Error:") == 1


def test_expired_code(
    amesh: AmeshRunner,
    pair: tuple[Device, Device],
    children: list,
    relay_factory: RelayFactory,
) -> None:
    target, controller = pair
    # Protocol-2 sessions live for AMESH_SAS_PAIRING_TTL, v1 ones for AMESH_PAIRING_TTL.
    short_lived = relay_factory({"AMESH_PAIRING_TTL": "2", "AMESH_SAS_PAIRING_TTL": "2"})
    listener = target.spawn("listen", "--v2", relay=short_lived)
    children.append(listener)
    listener.expect(PAIRING_CODE)
    code = listener.match.group(1).decode()
    fails_with(listener, "The pairing code expired before a controller joined", ExitCode.TIMED_OUT)
    result = amesh(
        ["invite", "--v2", code], controller.home, env={"AMESH_RELAY_URL": short_lived.url}
    )
    assert result.returncode == ExitCode.FAILED
    assert MESSAGES["code_not_found"] in unwrapped(result.stderr)
    assert target.entries() == []


def test_peer_killed_mid_handshake(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    os.kill(inviter.pid, signal.SIGKILL)
    inviter.expect(pexpect.EOF)
    listener.sendline(sas)
    fails_with(listener, MESSAGES["peer_disconnected"])
    assert target.entries() == []
    assert controller.entries() == []


def test_relay_killed_mid_handshake(
    amesh: AmeshRunner, pair: tuple[Device, Device], relay_factory: RelayFactory, children: list
) -> None:
    target, controller = pair
    own_relay = relay_factory()
    listener, inviter, sas = start_pairing(target, controller, own_relay, children)
    own_relay.kill()
    fails_with(inviter, MESSAGES["relay_closed"])
    listener.sendline(sas)
    fails_with(listener, MESSAGES["relay_closed"])
    assert target.entries() == []
    assert controller.entries() == []


def test_legacy_pairing_both_sides(
    amesh: AmeshRunner, pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children, "--legacy")
    assert finish(inviter) == 0  # v1: the controller is never told the result (pairing.md W7)
    listener.sendline(sas)
    listener.expect("is now a trusted controller of this device")
    assert finish(listener) == 0
    [on_target] = target.entries()
    [on_controller] = controller.entries()
    assert on_target["deviceId"] == controller.device_id
    assert on_controller["deviceId"] == target.device_id
    assert on_target.get("protocol", 1) == 1 and on_controller.get("protocol", 1) == 1


def test_max_controllers_reached_is_refused_by_default(
    amesh: AmeshRunner,
    make_device: Callable[..., Device],
    module_relay: RelayProcess,
    children: list,
) -> None:
    """pairing.md W7: the reference's (Y/n) defaults to replacing every controller; ours is
    (y/N) and answering with Enter keeps the existing controller."""
    target = make_device("Server")
    first, second = make_device("Laptop"), make_device("Desktop")
    listener, inviter, sas = start_pairing(target, first, module_relay, children)
    listener.sendline(sas)
    assert finish(listener) == 0 and finish(inviter) == 0

    listener, inviter, _ = start_pairing(
        target, second, module_relay, children, target_asks=r"Replace it with Desktop\? \(y/N\)"
    )
    listener.sendline("")
    fails_with(
        listener,
        "This device already has the maximum number of controllers (1)",
        ExitCode.REFUSED,
    )
    fails_with(inviter, MESSAGES["peer_disconnected"])
    assert [d["deviceId"] for d in target.entries()] == [first.device_id]
    assert second.entries() == []


def test_listen_without_identity(
    amesh: AmeshRunner, home: Path, module_relay: RelayProcess
) -> None:
    result = amesh(["listen", "--relay", module_relay.url], home)
    assert (result.returncode, result.stdout) == (ExitCode.FAILED, "")
    assert result.stderr == " ›   Error: No identity found. Run `amesh init` first.\n"


def test_tampered_allow_list_on_the_target_stops_pairing(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children)
    listener.sendline(sas)
    assert finish(listener) == 0 and finish(inviter) == 0
    sealed = target.home / "allow_list.json"
    sealed.write_text(sealed.read_text().replace('"Laptop"', '"Laptop (evil)"'))

    listener = target.spawn("listen", "--v2", relay=module_relay)
    children.append(listener)
    listener.expect(PAIRING_CODE)
    code = listener.match.group(1).decode()
    inviter = controller.spawn("invite", "--v2", "--no-confirm", code, relay=module_relay)
    children.append(inviter)
    fails_with(
        listener,
        "CRITICAL: Allow list integrity check failed — possible tampering.",
        ExitCode.FAILED,
    )
    fails_with(inviter, MESSAGES["peer_disconnected"])
    assert '"Laptop (evil)"' in sealed.read_text()  # refused, never re-sealed


def test_legacy_wrong_sas_leaves_the_controller_entry_with_a_revoke_hint(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    """pairing.md W7, unfixable in v1: the legacy controller never learns the verdict, so it
    records the target at once (as the reference does) and tells the operator how to undo it."""
    target, controller = pair
    listener, inviter, sas = start_pairing(target, controller, module_relay, children, "--legacy")
    inviter.expect(f"amesh revoke {target.device_id}")
    assert finish(inviter) == 0
    for attempt in range(SAS_ATTEMPTS):
        if attempt:
            listener.expect(SAS_PROMPT)
        listener.sendline(f"{(int(sas) + 1) % 1_000_000:06d}")
    fails_with(listener, MESSAGES["sas_mismatch"])
    assert target.entries() == []
    assert [d["deviceId"] for d in controller.entries()] == [target.device_id]


def test_no_silent_downgrade_between_legacy_and_v2(
    pair: tuple[Device, Device], module_relay: RelayProcess, children: list
) -> None:
    """A v2 controller meeting a --legacy target stops with a sentence that says what legacy
    pairing costs (issue 10 item 8: never just "rerun with --legacy"), and so does the target
    (the relay tells both sides); a legacy invite then pairs."""
    target, controller = pair
    listener = target.spawn("listen", "--legacy", relay=module_relay)
    children.append(listener)
    listener.expect(PAIRING_CODE)
    code = listener.match.group(1).decode()
    inviter = controller.spawn("invite", "--v2", code, relay=module_relay)
    children.append(inviter)
    fails_with(inviter, MESSAGES["peer_not_v2"])
    assert "hostile relay" in MESSAGES["peer_not_v2"]
    assert "a relay you run yourself" in MESSAGES["peer_not_v2"]
    fails_with(listener, MESSAGES["peer_requires_v2"])
    listener = target.spawn("listen", "--legacy", relay=module_relay)
    children.append(listener)
    listener.expect(PAIRING_CODE)
    code = listener.match.group(1).decode()
    legacy_inviter = controller.spawn("invite", code, "--legacy", relay=module_relay)
    children.append(legacy_inviter)
    legacy_inviter.expect(SAS_LINE)
    listener.expect(SAS_PROMPT)
    listener.sendline(legacy_inviter.match.group(1))
    listener.expect("is now a trusted controller of this device")
    assert finish(listener) == 0 and finish(legacy_inviter) == 0
    assert [d["deviceId"] for d in target.entries()] == [controller.device_id]
