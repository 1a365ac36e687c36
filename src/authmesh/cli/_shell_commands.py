"""``amesh grant``, ``amesh shell`` and ``amesh agent start``: the remote shell (extra ``shell``).

``grant`` runs on the target and stores the shell permission in the sealed allow list;
``agent start`` runs on the target and serves shells to granted controllers; ``shell`` runs on
the controller. Failures are one sentence each with the exit status of the table in
docs/cli.md — also for ``amesh shell`` before its session starts (the remote command never ran,
so there is no remote status to confuse it with); a completed session exits with the remote
shell's status, and a session lost after it started exits 255 (as ssh: the remote status is
unknown).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from authmesh.cli._options import (
    AtLeastOne,
    json_option,
    relay_option,
    required_argument,
    resolve_relay_url,
)
from authmesh.cli._output import CliError, emit, out
from authmesh.cli._session import by_id_or_unique_name, open_context, store_errors
from authmesh.core import ROLE_CONTROLLER, ROLE_TARGET, AllowList, Device
from authmesh.core._text import printable
from authmesh.shell import Agent, AgentConfig, ShellRequest, run_shell
from authmesh.shell._agent import AgentIdentity
from authmesh.shell._handshake import HANDSHAKE_TIMEOUT
from authmesh.shell._recording import prepare_directory

__all__ = ["agent_group", "grant_command", "resolve_target", "shell_command"]


def resolve_target(allow_list: AllowList, name_or_id: str) -> Device:
    """The paired target with this device id, else the one with this friendly name."""
    targets = [d for d in allow_list.devices if d.role == ROLE_TARGET]
    device = by_id_or_unique_name(
        targets, name_or_id, lambda d: d.device_id, lambda d: d.friendly_name, "targets"
    )
    if device is not None:
        return device
    raise CliError(
        f'Target "{name_or_id}" is not in the allow list as a target; run amesh list to see '
        "paired devices.",
        "device_not_found",
    )


@click.command("grant")
@required_argument("device_id", "deviceId", "Device ID of the controller (see amesh list)")
@click.option("--shell", "grant_shell", is_flag=True, help="Allow this controller to open shells.")
@click.option(
    "--revoke-shell",
    "--no-shell",
    "revoke_shell",
    is_flag=True,
    help="Take shell access away (running sessions end within seconds).",
)
@json_option
def grant_command(device_id: str, grant_shell: bool, revoke_shell: bool, as_json: bool) -> None:
    """Grant or revoke a paired controller's shell access (run on the target)."""
    if grant_shell == revoke_shell:
        raise CliError(
            "Specify exactly one of --shell or --revoke-shell. Example: amesh grant "
            "<device-id> --shell",
            "usage",
        )
    view = open_context()
    device = view.find_device(device_id)
    name = printable(str(device.get("friendlyName", "")))
    if grant_shell and device.get("role") != ROLE_CONTROLLER:
        raise CliError(
            f"{device_id} ({name}) is paired as a target, so it cannot open shells here; "
            "only controllers can be granted shell access.",
            "usage",
        )
    with store_errors():
        view.context.allow_list.set_permissions(device_id, {"shell": grant_shell})
    out()
    if grant_shell:
        out(f"  Shell access granted to {name} ({device_id}).")
        out("  Allow list resealed. Start the agent with `amesh agent start` if needed.")
    else:
        out(f"  Shell access revoked for {name} ({device_id}).")
        out("  Allow list resealed. Its running sessions end within seconds.")
    out()
    emit(
        "permissions",
        deviceId=device_id,
        friendlyName=device.get("friendlyName"),
        shell=grant_shell,
    )


@click.command("shell")
@required_argument("target", "target", "Target device ID or friendly name")
@click.option("-c", "--command", default=None, help="Run this command instead of a login shell.")
@relay_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1, max=300),
    default=HANDSHAKE_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the target at each handshake step.",
)
@click.pass_context
def shell_command(
    ctx: click.Context, target: str, command: str | None, relay: str | None, timeout: float
) -> None:
    """Open a shell on a paired target (its agent must be running)."""
    view = open_context()
    store = view.context.allow_list
    with store_errors():
        entry = resolve_target(store.snapshot(), target)
    signer = view.signer()
    request = ShellRequest(
        relay_url=resolve_relay_url(ctx, relay),
        target=entry,
        command=command,
        handshake_timeout=timeout,
    )
    if command is None:
        click.echo(
            f"Connecting to {printable(entry.friendly_name)} ({entry.device_id})...", err=True
        )
    with store_errors():
        status = asyncio.run(
            run_shell(
                request,
                signer=signer,
                friendly_name=view.context.identity.friendly_name,
                allow_list=store.snapshot,
            )
        )
    # SystemExit, not ctx.exit: the entry point runs click with standalone_mode=False, which
    # turns ctx.exit's status into a return value that main() does not propagate.
    sys.exit(status)


@click.group("agent")
def agent_group() -> None:
    """Run the shell agent on a target device."""


@agent_group.command("start")
@relay_option
@click.option("--allow-root", is_flag=True, help="Run even as root (every shell is then root).")
@click.option(
    "--max-sessions",
    type=AtLeastOne(),
    default=4,
    show_default=True,
    help="Concurrent sessions served at most.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Minutes without controller input or shell output before a session ends (0: never).",
)
@click.option("--shell", "shell_path", default=None, help="Shell to run (default: login shell).")
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Record every session in this directory (asciicast v2).",
)
@click.option(
    "--protocol",
    type=click.Choice(["1", "2"]),
    default="2",
    show_default=True,
    help="2: domain-separated registration and one relay socket per session where the relay "
    "offers it; 1: register exactly as the reference agent (one session at a time).",
)
@click.pass_context
def agent_start_command(
    ctx: click.Context,
    *,
    relay: str | None,
    allow_root: bool,
    max_sessions: int,
    idle_timeout: float,
    shell_path: str | None,
    record_dir: Path | None,
    protocol: str,
) -> None:
    """Keep this device reachable for `amesh shell` (foreground; use systemd to daemonize)."""
    if os.geteuid() == 0 and not allow_root:
        raise CliError(
            "Refusing to run the agent as root: every shell it serves would be a root shell. "
            "Run it as an unprivileged user, or pass --allow-root if that is really intended.",
            "usage",
        )
    if shell_path is not None and not os.access(shell_path, os.X_OK):
        raise CliError(
            f"The shell {shell_path} is not an executable file; pass a valid --shell.", "usage"
        )
    if record_dir is not None:
        try:
            record_dir = prepare_directory(record_dir)
        except OSError as exc:
            raise CliError(
                f"Cannot record sessions in {record_dir} ({exc}); pass a writable --record "
                "directory.",
                "usage",
            ) from None
    view = open_context()
    store = view.context.allow_list
    with store_errors():
        granted = sum(
            1 for d in store.snapshot().devices if d.role == ROLE_CONTROLLER and d.shell_allowed
        )
    config = AgentConfig(
        relay_url=resolve_relay_url(ctx, relay),
        max_sessions=max_sessions,
        idle_timeout=idle_timeout * 60.0,
        shell=shell_path,
        record_dir=record_dir,
        protocol=int(protocol),
    )
    identity = AgentIdentity(
        signer=view.signer(),
        friendly_name=view.context.identity.friendly_name,
        allow_list=store.snapshot,
    )
    log = logging.getLogger("authmesh.shell.agent")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[amesh agent] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.info("Device: %s", printable(identity.friendly_name))
    log.info("Authorized controllers with shell access: %d", granted)
    if granted == 0:
        log.info("Grant one with: amesh grant <controller-device-id> --shell")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        await Agent(config, identity, log).run(stop)
        log.info("Agent stopped.")

    asyncio.run(serve())
