"""End to end: ``amesh shell`` → real relay process → ``amesh agent start`` → a PTY shell."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pexpect

from authmesh.cli._exit_codes import ExitCode
from tests.support.relayproc import RelayProcess, wait_until
from tests.support.shell import (
    CLI,
    MARKER,
    TERM,
    AgentProcess,
    Homes,
    cli_env,
    exit_status,
    marked_processes,
    paired_box,
    registered_agents,
    run_cli,
    run_shell,
    spawn_shell,
    type_line,
)


def test_interactive_session_size_resize_term_and_exit_0(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    # The controller runs inside `sh -c '...; stty -a'` so we can see the terminal it leaves.
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, "echo A$((40+2))Z", "A42Z")
    type_line(child, "stty size", "30 100")
    type_line(child, "echo T=$TERM", f"T={TERM}")
    child.setwinsize(40, 120)
    type_line(child, "stty size", "40 120")
    type_line(child, "echo L=${AUTH_MESH_DIR:-none}", "L=none")  # agent secrets not inherited
    child.send("exit\r")
    assert exit_status(child) == 0
    assert "opened by laptop (interactive, 100x30)" in healthy_agent.log()


def test_interactive_exit_code_42_and_terminal_restored(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, "echo R$((1+1))R", "R2R")
    child.send("exit 42\r")
    assert exit_status(child) == 42


def test_raw_mode_is_restored_after_the_session(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    command = shlex.join([*CLI, "shell", "prod-box", "--relay", session_relay.url])
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", f"{command}; echo STATUS=$?; stty -a"],
        env=cli_env(homes.controller, scratch),
        dimensions=(30, 100),
        timeout=15,
        encoding="utf-8",
    )
    type_line(child, "echo R$((2+2))R", "R4R")
    child.send("exit 3\r")
    child.expect_exact("STATUS=3")
    child.expect(pexpect.EOF)
    settings = child.before.split()
    assert {"icanon", "echo", "isig", "icrnl", "opost"} <= set(settings)


def test_command_mode_exit_codes_and_output(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    ok = run_shell(homes.controller, session_relay, scratch, "-c", "echo hi-there")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.replace("\r\n", "\n") == "hi-there\n"
    failed = run_shell(
        homes.controller,
        session_relay,
        scratch,
        "-c",
        "echo x >&2; exit 42",
    )
    assert failed.returncode == 42, failed.stderr
    assert "x" in failed.stdout  # stderr of the remote command shares the PTY


def test_bulk_output_right_before_exit_arrives_whole(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    # The shell exits while its last output is still being gathered from the PTY.
    result = run_shell(
        homes.controller, session_relay, scratch, "-c", "yes 0123456789 | head -n 40000"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace("\r\n", "\n") == "0123456789\n" * 40000


def test_piped_stdin_drives_a_session_and_its_end_is_sent(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    script = "echo piped-$((3*3))\n"  # no `exit`: the end of input (Ctrl-D) logs out
    result = run_shell(homes.controller, session_relay, scratch, stdin=script)
    assert result.returncode == 0, result.stderr
    assert "piped-9" in result.stdout


def test_a_closed_output_pipe_ends_the_remote_command(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    command = shlex.join(
        [*CLI, "shell", "prod-box", "--relay", session_relay.url, "-c", f"yes {MARKER}8"]
    )
    result = subprocess.run(
        ["/bin/sh", "-c", f"{command} | head -n 1"],
        env=cli_env(homes.controller, scratch),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.splitlines()[0] == f"{MARKER}8"
    assert result.stderr == ""  # like a local pipeline: no message, no traceback
    wait_until(lambda: not marked_processes(), 10, "the remote `yes` to be ended")


def test_controller_killed_mid_session(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, "echo S$((3+3))S", "S6S")
    child.send(f"sleep {MARKER}1 & sleep {MARKER}2\r")
    wait_until(lambda: len(marked_processes()) == 2, 10, "the remote sleeps to start")
    os.kill(child.pid, signal.SIGKILL)
    child.close(force=True)
    wait_until(lambda: not marked_processes(), 10, "the killed controller's shell to be ended")
    healthy_agent.wait_for("controller gone")
    again = run_shell(homes.controller, session_relay, scratch, "-c", "echo next")
    assert again.returncode == 0 and "next" in again.stdout, again.stderr


def test_ungranted_controller_is_refused_quickly(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    started = time.monotonic()
    result = run_shell(homes.ungranted, session_relay, scratch, "-c", "id")
    assert result.returncode == ExitCode.REFUSED
    assert "refused the session" in result.stderr and "amesh grant" in result.stderr
    assert result.stdout == ""
    assert time.monotonic() - started < 8  # our agent says `done`; no 30 s timeout
    assert "has no shell access" in healthy_agent.log()


def test_target_role_peer_is_refused(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    result = run_shell(homes.target_peer, session_relay, scratch, "-c", "id")
    assert result.returncode == ExitCode.REFUSED
    assert "refused the session" in result.stderr
    assert "paired with this device as a target" in healthy_agent.log()


def test_second_request_cannot_divert_a_live_session(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, "echo F$((5+5))F", "F10F")
    intruder = run_shell(
        homes.ungranted,
        session_relay,
        scratch,
        "--timeout",
        "2",
        "-c",
        "id",
    )
    assert intruder.returncode in (ExitCode.REFUSED, ExitCode.TIMED_OUT)
    type_line(child, "echo G$((6+6))G", "G12G")  # the first session still gets its output
    child.send("exit 7\r")
    assert exit_status(child) == 7


def test_paste_of_one_mebibyte_arrives_intact(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    # 1 MiB in lines shorter than the remote terminal's 4 KiB canonical line limit.
    block = os.urandom(786_432).hex().encode()[: 1024 * 1024]
    lines = b"".join(block[i : i + 127] + b"\n" for i in range(0, len(block), 127))
    target_file = scratch / "paste.txt"
    child = spawn_shell(homes.controller, session_relay, scratch)
    child.timeout = 60
    type_line(child, "stty -echo; echo E$((8*8))E", "E64E")
    child.send(f"cat > {target_file}; stty echo; echo DONE$((7*7))\r")
    child.send(lines.decode())
    child.send("\x04")
    child.expect_exact("DONE49")
    child.send("exit\r")
    assert exit_status(child) == 0
    assert hashlib.sha256(target_file.read_bytes()).hexdigest() == hashlib.sha256(lines).hexdigest()


def test_sessions_are_recorded_as_asciicast_v2(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    before = set(healthy_agent.record_dir.glob("*.cast"))
    result = run_shell(
        homes.controller,
        session_relay,
        scratch,
        "-c",
        "echo recorded-$((2*21))",
    )
    assert result.returncode == 0, result.stderr
    new = set(healthy_agent.record_dir.glob("*.cast")) - before
    assert len(new) == 1
    path = new.pop()
    assert path.stat().st_mode & 0o777 == 0o600
    header, *events = (json.loads(line) for line in path.read_text().splitlines())
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    assert "recorded-42" in "".join(event[2] for event in events if event[1] == "o")


def test_relay_restart_cuts_sessions_cleanly_and_agent_registers_again(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    registrations = healthy_agent.count("Registered with relay")
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, f"sleep {MARKER}6 & echo Q$((8+8))Q", "Q16Q")
    session_relay.stop()  # mid-session: the controller must fail, not hang or report 0
    assert exit_status(child) == 255
    assert "was lost before the remote shell exited" in " ".join(
        child.before.replace("›", " ").split()
    )
    wait_until(lambda: not marked_processes(), 10, "the cut session's processes to end")
    healthy_agent.wait_for("Reconnecting in")
    session_relay.start()
    healthy_agent.wait_for("Registered with relay", registrations + 1, timeout=20)
    wait_until(lambda: registered_agents(session_relay) >= 1, 5, "the relay to list the agent")
    result = run_shell(homes.controller, session_relay, scratch, "-c", "echo back")
    assert result.returncode == 0 and "back" in result.stdout, result.stderr


def test_revoking_the_grant_ends_a_running_session(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    child = spawn_shell(homes.controller, session_relay, scratch)
    type_line(child, "echo V$((9+9))V", "V18V")
    try:
        revoked = run_cli(homes.target, scratch, "grant", homes.controller_id, "--revoke-shell")
        assert revoked.returncode == 0, revoked.stderr
        assert exit_status(child) == 129  # 128 + SIGHUP: the agent hung the shell up
        healthy_agent.wait_for("shell access revoked")
    finally:
        granted = run_cli(homes.target, scratch, "grant", homes.controller_id, "--shell")
        assert granted.returncode == 0, granted.stderr


def test_concurrent_sessions_up_to_the_limit(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    # Protocol 2: each session on its own relay socket, so they run side by side (S3, W1).
    assert "Registered with relay (identity verified, protocol 2)" in healthy_agent.log()
    sessions = []
    for number in range(3):  # the agent runs with --max-sessions 3
        child = spawn_shell(homes.controller, session_relay, scratch)
        type_line(child, f"echo C$(({number}+10))C", f"C{number + 10}C")
        sessions.append(child)
    started = time.monotonic()
    refused = run_shell(homes.controller, session_relay, scratch, "-c", "id")
    assert refused.returncode == ExitCode.REFUSED
    assert "at its session limit" in " ".join(refused.stderr.replace("›", " ").split())
    assert time.monotonic() - started < 8  # told at once, not after the handshake timeout
    type_line(sessions[0], "echo C$((3+10))C", "C13C")  # the others are undisturbed
    for number, child in enumerate(sessions):
        child.send(f"exit {number + 1}\r")
        assert exit_status(child) == number + 1


def test_stopping_the_agent_ends_its_sessions(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    box = paired_box(homes, scratch, "stop-box")
    stopping = AgentProcess(box, session_relay, scratch, "stop-agent")
    stopping.wait_for("Registered with relay")
    child = spawn_shell(homes.controller, session_relay, scratch, target="stop-box")
    type_line(child, f"sleep {MARKER}4 & echo K$((2+3))K", "K5K")
    wait_until(lambda: len(marked_processes()) == 1, 10, "the background sleep to start")
    stopping.process.send_signal(signal.SIGTERM)  # what systemd does on `systemctl stop`
    assert stopping.process.wait(10) == 0
    wait_until(lambda: not marked_processes(), 10, "the stopped agent's shells to be ended")
    assert exit_status(child) == 255
    log = stopping.log()
    assert "Agent stopped." in log
    # Issue 13: every task of the agent is awaited, none is left to report at exit.
    assert "never retrieved" not in log and "Traceback" not in log, log


def test_idle_sessions_are_ended(
    homes: Homes, session_relay: RelayProcess, healthy_agent: AgentProcess, scratch: Path
) -> None:
    box = paired_box(homes, scratch, "idle-box")
    idle_agent = AgentProcess(box, session_relay, scratch, "idle-agent", "--idle-timeout", "0.03")
    try:
        idle_agent.wait_for("Registered with relay")
        child = spawn_shell(homes.controller, session_relay, scratch, target="idle-box")
        type_line(child, f"sleep {MARKER}7 & echo I$((7+7))I", "I14I")
        assert exit_status(child) == 129  # ~2 s without input or output: hung up
        idle_agent.wait_for("idle timeout")
    finally:
        idle_agent.stop()
