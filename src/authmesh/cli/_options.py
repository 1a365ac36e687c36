"""Option and argument types shared by the ``amesh`` commands.

They fail with the reference's (oclif) wording so parse errors read the same in both CLIs, and
carry what the error printer in :mod:`authmesh.cli.main` needs (argument names and help).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from authmesh.cli._output import CliError, json_mode
from authmesh.pairing import MAX_FRIENDLY_NAME_CHARS

__all__ = [
    "DEFAULT_RELAY_URL",
    "AtLeastOne",
    "HelpedArgument",
    "OclifChoice",
    "check_name",
    "json_option",
    "relay_option",
    "resolve_relay_url",
]

DEFAULT_RELAY_URL = "wss://relay.authmesh.dev/ws"
RELAY_ENV = "AMESH_RELAY_URL"

_F = TypeVar("_F", bound=Callable[..., Any])


class OclifChoice(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2 only
    """One of a fixed list of strings; the error names the flag, the value and the choices."""

    name = "choice"

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "|".join(self.choices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in self.choices:
            return str(value)
        flag = param.name if param is not None and param.name else "value"
        self.fail(f"Expected --{flag}={value} to be one of: {', '.join(self.choices)}", param, ctx)


class AtLeastOne(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2 only
    """An integer ≥ 1, refused with oclif's wording."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.isascii() and value.strip().lstrip("+-").isdigit():
            number = int(value)
        else:
            self.fail(f"Expected an integer but received: {value}", param, ctx)
        if number < 1:
            self.fail(f"Expected an integer greater than or equal to 1 but received: {value}")
        return number


class HelpedArgument(click.Argument):
    """A positional argument with a help text and the reference's camelCase name."""

    def __init__(
        self, param_decls: Sequence[str], *, help_text: str, oclif_name: str, **attrs: Any
    ) -> None:
        super().__init__(param_decls, **attrs)
        self.help_text = help_text
        self.oclif_name = oclif_name


def required_argument(name: str, oclif_name: str, help_text: str) -> Callable[[_F], _F]:
    """A required positional argument shown as ``oclif_name`` upper-cased, with help text."""
    return click.argument(
        name,
        cls=HelpedArgument,
        required=True,
        metavar=oclif_name.upper(),
        oclif_name=oclif_name,
        help_text=help_text,
    )


def relay_option(function: _F) -> _F:
    """``--relay/-r URL``: the relay to use (else ``AMESH_RELAY_URL``, else the public relay)."""
    decorator = click.option(
        "--relay",
        "-r",
        metavar="URL",
        default=None,
        help=f"Relay WebSocket URL (default: ${RELAY_ENV} or {DEFAULT_RELAY_URL}).",
    )
    return decorator(function)


def resolve_relay_url(ctx: click.Context, command_relay: str | None) -> str:
    """The command's ``--relay``, then the global one, then ``AMESH_RELAY_URL``, then default."""
    root = ctx.find_root()
    global_relay = root.obj.get("relay") if isinstance(root.obj, dict) else None
    url = command_relay or global_relay or os.environ.get(RELAY_ENV) or DEFAULT_RELAY_URL
    if not str(url).startswith(("ws://", "wss://")):
        raise CliError(
            f"The relay URL {url!r} is not a WebSocket URL; give one starting with wss:// "
            f"(or ws:// on a trusted network) with --relay or {RELAY_ENV}.",
            "usage",
        )
    return str(url)


def _enable_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        json_mode(True)
    return value


def json_option(function: _F) -> _F:
    """``--json``: stdout carries only JSON, one object per line; human text goes to stderr."""
    decorator = click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=_enable_json,
        help="Print results as JSON objects, one per line, on stdout (text goes to stderr).",
    )
    return decorator(function)


def check_name(name: str, flag: str = "--name") -> str:
    """A friendly name every pairing protocol can carry: not blank, at most the pairing limit."""
    if not name.strip():
        raise CliError(f"The device name must not be empty; pass a name with {flag}.", "usage")
    if len(name) > MAX_FRIENDLY_NAME_CHARS:
        raise CliError(
            f"The device name is {len(name)} characters long; pairing carries at most "
            f"{MAX_FRIENDLY_NAME_CHARS}, so pass a shorter {flag}.",
            "usage",
        )
    return name
