"""``amesh rotate``, ``amesh accept-rotation`` and ``amesh trust --max-age``.

``rotate`` replaces this device's key without pairing again (:mod:`authmesh.store._rotation`):
servers called through the SDK switch on the next request (:mod:`authmesh.sdk._rotation`),
other peers take the exported chain with ``accept-rotation``. TypeScript amesh peers know
nothing of rotations; the command says how to re-pair them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from authmesh.cli._options import json_option, relay_option, required_argument, resolve_relay_url
from authmesh.cli._output import CliError, emit, out
from authmesh.cli._session import open_context, store_errors
from authmesh.core import Device, RotationError, RotationStatement
from authmesh.core._jsoncanon import JsonError, parse, pretty_stringify
from authmesh.core._rotation import chain_document, chain_from_document, key_seq
from authmesh.core._text import printable
from authmesh.pairing import PairingError
from authmesh.pairing._rotation import NotifyError, offer_rotation, receive_rotation
from authmesh.store import Identity
from authmesh.store._files import atomic_write, read_text
from authmesh.store._rotation import (
    DEFAULT_GRACE_SECONDS,
    accept_rotation,
    load_state,
    rotate_identity,
    set_max_key_age,
)

__all__ = [
    "accept_rotation_command",
    "format_age",
    "parse_duration",
    "rotate_command",
    "trust_command",
]

_MAX_EXPORT_CHARS = 64 * 1024
_T = TypeVar("_T")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")


def parse_duration(text: str, option: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise CliError(
            f"{option} {text!r} is not a duration; write it like 90d, 12h or 30m.", "usage"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_age(seconds: int) -> str:
    """A short age: ``45s``, ``12m``, ``5h``, ``3d``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _over_relay(exchange: Awaitable[_T]) -> _T:
    """Run one relay exchange; relay and peer failures become one sentence (exit 2)."""
    try:
        return asyncio.run(exchange)  # type: ignore[arg-type]
    except PairingError as error:
        raise CliError(str(error), error.code) from None
    except NotifyError as error:
        raise CliError(str(error), "refused") from None


def _show_code(code: str, lifetime: float) -> None:
    emit("code", code=code, expiresIn=int(lifetime))
    out(f"  Code: {code}   (valid {int(lifetime)} s)")
    out(f"  On the peer, run:  amesh accept-rotation --code {code}")


def _export(path: Path, chain: tuple[RotationStatement, ...]) -> None:
    with store_errors():
        atomic_write(path, pretty_stringify(chain_document(chain)).encode("utf-8"), 0o644)


@click.command("rotate")
@click.option(
    "--grace",
    default=f"{DEFAULT_GRACE_SECONDS // 86_400}d",
    show_default=True,
    help="How long the old key is kept before it is destroyed (e.g. 7d, 12h, 0s).",
)
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the rotation chain to FILE for `amesh accept-rotation` on peers.",
)
@click.option(
    "--notify",
    "notify",
    type=click.IntRange(min=0, max=100),
    default=0,
    metavar="N",
    help="Then deliver the rotation through the relay to N peers, one code each.",
)
@relay_option
@json_option
@click.pass_context
def rotate_command(
    ctx: click.Context,
    *,
    grace: str,
    export_path: Path | None,
    notify: int,
    relay: str | None,
    as_json: bool,
) -> None:
    """Replace this device's key; peers keep trusting it without pairing again."""
    grace_seconds = parse_duration(grace, "--grace")
    relay_url = resolve_relay_url(ctx, relay) if notify else ""
    context = open_context().context
    old_id = context.identity.device_id
    with store_errors():
        identity, statement = rotate_identity(
            context.home, context.keystore, grace_seconds=grace_seconds
        )
        chain = load_state(context.home).chain
    _show_rotated(old_id, identity, statement, grace_seconds)
    if export_path is not None:
        _export(export_path, chain)
        out(f"  Rotation chain written to {export_path}.")
    _show_next_steps(old_id)
    emit(
        "rotated",
        oldDeviceId=old_id,
        deviceId=identity.device_id,
        publicKey=identity.public_key,
        seq=statement.seq,
        oldKeyDestroyedAfter=statement.ts + grace_seconds,
        exportedTo=None if export_path is None else str(export_path),
    )
    if notify:
        _notify_peers(chain, notify, relay_url)


def _show_rotated(
    old_id: str, identity: Identity, statement: RotationStatement, grace_seconds: int
) -> None:
    out()
    out("  Key rotated.")
    out(f"  Old Device ID : {old_id}")
    out(f"  New Device ID : {identity.device_id}")
    out(f"  Rotation      : {statement.seq}")
    if grace_seconds:
        out(f"  Old key kept until {_when(statement.ts + grace_seconds)}, then destroyed.")
    else:
        out("  Old key destroyed.")


def _show_next_steps(old_id: str) -> None:
    out()
    out("  Servers you call with the authmesh SDK switch to the new key on your next")
    out("  request to them. Other peers (targets, shell agents): copy the chain there and run")
    out("    amesh accept-rotation FILE      (write it with `amesh rotate --export FILE`)")
    out("  or rotate with `--notify N` and run `amesh accept-rotation --code CODE` on each.")
    out("  Restart a running `amesh agent` here so the relay sees the new key.")
    out("  Peers running TypeScript amesh cannot follow a rotation: on each, run")
    out(f"    amesh revoke {old_id}")
    out("  and pair again (`amesh listen` there, `amesh invite` here).")
    out()


def _notify_peers(chain: tuple[RotationStatement, ...], count: int, relay_url: str) -> None:
    """Deliver the rotation to ``count`` peers through the relay, one code each."""
    # The allow list is now sealed for the new key: look peers up through the new identity.
    trusted = open_context().context.allow_list.find_by_public_key
    for _ in range(count):
        peer = _over_relay(offer_rotation(chain, trusted, relay_url=relay_url, on_code=_show_code))
        out(f"  {printable(peer.friendly_name)} ({peer.device_id}) now trusts the new key.")
        out()
        emit("notified", deviceId=peer.device_id, friendlyName=peer.friendly_name)


def _read_chain(path: Path) -> tuple[RotationStatement, ...]:
    with store_errors():
        text = read_text(path)
    if text is None:
        raise CliError(f"{path} does not exist; give the file `amesh rotate --export` wrote.")
    try:
        if len(text) > _MAX_EXPORT_CHARS:
            raise JsonError("too long")
        return chain_from_document(parse(text))
    except (JsonError, RotationError):
        raise CliError(
            f"{path} is not a rotation chain; give the file `amesh rotate --export` wrote."
        ) from None


@click.command("accept-rotation")
@click.argument("file", required=False, metavar="[FILE]")
@click.option("--code", default=None, help="Receive the rotation through the relay instead.")
@relay_option
@json_option
@click.pass_context
def accept_rotation_command(
    ctx: click.Context, file: str | None, code: str | None, relay: str | None, as_json: bool
) -> None:
    """Trust a paired device's new key, vouched for by its old one (FILE or --code)."""
    if (file is None) == (code is None):
        raise CliError(
            "Give either the FILE written by `amesh rotate --export` or the --code shown by "
            "`amesh rotate --notify`.",
            "usage",
        )
    view = open_context()
    store = view.context.allow_list
    if file is not None:
        chain = _read_chain(Path(file))
        with store_errors():
            entry = accept_rotation(store, chain)
    else:
        assert code is not None
        relay_url = resolve_relay_url(ctx, relay)

        def apply(received: tuple[RotationStatement, ...]) -> Device:
            with store_errors():
                return accept_rotation(store, received)

        entry = _over_relay(
            receive_rotation(code.strip(), view.signer(), apply, relay_url=relay_url)
        )

    out()
    out(
        f"  {printable(entry.friendly_name)} now uses key {entry.device_id} (rotation "
        f"{key_seq(entry)})."
    )
    out("  Allow list resealed; its old key is no longer trusted here.")
    out()
    emit(
        "rotation_accepted",
        deviceId=entry.device_id,
        friendlyName=entry.friendly_name,
        role=entry.role,
        keySeq=key_seq(entry),
    )


@click.command("trust")
@required_argument("device_id", "deviceId", "Device ID in the allow list")
@click.option(
    "--max-age",
    "max_age",
    required=True,
    help="Refuse the device's key once it is older than this (e.g. 90d); `none` removes it.",
)
@json_option
def trust_command(device_id: str, max_age: str, as_json: bool) -> None:
    """Set how old a trusted device's key may get before it must be rotated."""
    seconds = None if max_age.strip().lower() == "none" else parse_duration(max_age, "--max-age")
    view = open_context()
    with store_errors():
        set_max_key_age(view.context.allow_list, device_id, seconds)
    out()
    if seconds is None:
        out(f"  {device_id}: no maximum key age.")
    else:
        out(f"  {device_id}: key refused (key_expired) once older than {format_age(seconds)}.")
    out()
    emit("trust", deviceId=device_id, maxKeyAge=seconds)
