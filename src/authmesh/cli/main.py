"""The ``amesh`` command: click group, global options and the no-traceback entry point.

Every failure ends in one oclif-style sentence on stderr and the exit status of its error code
(:mod:`authmesh.cli._exit_codes`, the table in docs/cli.md): 2 for a wrong command line, 1 for a
failed operation, 3 refused, 4 timed out, 5 relay trouble, 130 interrupted. With ``--json`` the
failure is also one ``{"event": "error", ...}`` line on stdout. ``AMESH_DEBUG=1`` shows the
traceback of an unexpected internal error instead of hiding it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from types import FrameType
from typing import Any

import click

from authmesh import __version__
from authmesh.cli._exit_codes import ExitCode, exit_code_for
from authmesh.cli._options import HelpedArgument, OclifChoice, relay_option
from authmesh.cli._output import emit, print_error
from authmesh.errors import AuthMeshError

__all__ = ["cli", "main"]

_MORE_HELP = "See more help with --help"


# Command -> "module:attribute". A command's module is imported only when it runs, so
# `amesh list` does not pay for the pairing or shell stacks (websockets, asyncio, rich) at
# start-up. New commands: add one line here (the module must define the click command).
_COMMANDS = {
    "init": "authmesh.cli._init:init_command",
    "list": "authmesh.cli._devices:list_command",
    "revoke": "authmesh.cli._devices:revoke_command",
    "listen": "authmesh.cli._pair:listen_command",
    "invite": "authmesh.cli._pair:invite_command",
    "provision": "authmesh.cli._bootstrap:provision_command",
    "bootstrap": "authmesh.cli._bootstrap:bootstrap_command",
    "grant": "authmesh.cli._shell_commands:grant_command",
    "shell": "authmesh.cli._shell_commands:shell_command",
    "agent": "authmesh.cli._shell_commands:agent_group",
    "rotate": "authmesh.cli._rotate:rotate_command",
    "accept-rotation": "authmesh.cli._rotate:accept_rotation_command",
    "trust": "authmesh.cli._rotate:trust_command",
    "completion": "authmesh.cli._completion:completion_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="amesh")
@relay_option
@click.pass_context
def cli(ctx: click.Context, relay: str | None) -> None:
    """amesh: device-bound machine-to-machine authentication."""
    ctx.obj = {"relay": relay}


def _usage_block(ctx: click.Context | None, argument: HelpedArgument) -> str:
    command_path = ctx.command_path if ctx is not None else "amesh"
    label = argument.oclif_name.upper()
    return f"\nUSAGE\n  $ {command_path} {label}\n\nARGUMENTS\n  {label}  {argument.help_text}\n\n"


def _report_usage_error(exc: click.UsageError) -> None:
    """Translate click's parse errors into the reference's (oclif) wording."""
    param: Any = getattr(exc, "param", None)
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) and exc.ctx is not None:
        click.echo(exc.ctx.get_help())
        return
    if isinstance(exc, click.MissingParameter) and isinstance(param, click.Option):
        print_error(
            f"The following error occurred:\n  Missing required flag {param.name}\n{_MORE_HELP}"
        )
    elif isinstance(exc, click.MissingParameter) and isinstance(param, HelpedArgument):
        print_error(f"Missing 1 required arg:\n{param.oclif_name}  {param.help_text}\n{_MORE_HELP}")
        sys.stderr.write(_usage_block(exc.ctx, param))
    elif isinstance(exc, click.BadParameter) and isinstance(param, click.Option):
        if isinstance(param.type, OclifChoice):
            print_error(f"{exc.message}\n{_MORE_HELP}")
        else:
            print_error(f"Parsing --{param.name.replace('_', '-')} \n\t{exc.message}\n{_MORE_HELP}")
    else:
        print_error(f"{exc.format_message()}\n{_MORE_HELP}")


def _fail(message: str, code: str) -> None:
    status = exit_code_for(code)
    print_error(message)
    emit("error", code=code, exitCode=int(status), message=message)
    sys.exit(status)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends a command as Ctrl-C does: through whatever handles SIGINT right now
    (asyncio's runner cancels the main task, so nothing stops half-written; outside a loop
    Python raises KeyboardInterrupt), then one line and status 130."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``amesh`` and exit with its status, never a traceback."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        cli.main(args=argv, prog_name="amesh", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        _report_usage_error(exc)
        sys.exit(ExitCode.OK)
    except click.UsageError as exc:
        _report_usage_error(exc)
        sys.exit(ExitCode.USAGE)
    except AuthMeshError as exc:
        _fail(exc.message, exc.code)
    except (KeyboardInterrupt, click.Abort):
        sys.stderr.write("\n")
        _fail("Interrupted; nothing was changed by the step in progress.", "interrupted")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("AMESH_DEBUG"):
            raise
        _fail(
            f"amesh failed unexpectedly ({type(exc).__name__}: {exc}). "
            "Run again with AMESH_DEBUG=1 for details and report it.",
            "internal",
        )
    sys.exit(ExitCode.OK)
