"""``amesh completion bash|zsh|fish``: print the shell's completion script (click's support).

Install it once, e.g. ``amesh completion bash > ~/.local/share/bash-completion/completions/amesh``;
the script calls ``amesh`` back with ``_AMESH_COMPLETE`` set to complete commands and options.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from authmesh.cli._output import CliError

__all__ = ["completion_command"]

_SHELLS = ("bash", "zsh", "fish")
_COMPLETE_VAR = "_AMESH_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(_SHELLS))
def completion_command(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    from authmesh.cli.main import cli

    completion_class = get_completion_class(shell)
    if completion_class is None:  # click dropped support for this shell
        raise CliError(f"click cannot complete {shell} here; use bash, zsh or fish.", "usage")
    click.echo(completion_class(cli, {}, "amesh", _COMPLETE_VAR).source())
