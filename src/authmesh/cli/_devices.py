"""``amesh list`` and ``amesh revoke``: show and edit this device's allow list.

Output is the reference's, line for line (sdk-keystore.md §9.2, §9.3), except that control
characters in names are shown as ``?`` so a name cannot drive the terminal. Differences on
failure paths (W20): a wrong passphrase or unreadable key is reported as what it is instead of
"No identity found"; a tampered allow list in ``revoke`` gets the same clear sentence and exit
status as in ``list`` instead of a raw exception with exit 1; ``--yes`` skips the question, and
without a terminal to ask on, ``revoke`` refuses (usage error) unless ``--yes`` is given: a
script must never believe a device was revoked when it was not. ``revoke`` also takes a
friendly name when exactly one paired device has it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from authmesh.cli._options import json_option, required_argument
from authmesh.cli._output import CliError, emit, out, prompt_line
from authmesh.cli._rotate import format_age
from authmesh.cli._session import backend_label, open_context
from authmesh.core import Device
from authmesh.core._rotation import KEY_SEQ_FIELD, MAX_AGE_FIELD, key_age_seconds, key_expired
from authmesh.core._text import printable
from authmesh.store._context import is_software_backend

__all__ = ["list_command", "render_device_list", "revoke_command"]

_RULE = "  " + "─" * 55
_NAME_COLUMN = 25
_ROLE_COLUMN = 14


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _pad(text: str, width: int) -> str:
    """JavaScript ``padEnd``: pads to ``width`` UTF-16 code units."""
    return text + " " * max(0, width - _utf16_len(text))


def _date(iso_timestamp: Any) -> str:
    return str(iso_timestamp).split("T", 1)[0]


def _key_age(device: Mapping[str, Any]) -> str:
    """For rotated or age-limited entries (never in reference files): the key's age."""
    if not any(name in device for name in (KEY_SEQ_FIELD, MAX_AGE_FIELD)):
        return ""
    entry = Device(device)
    age = key_age_seconds(entry, time.time())
    text = f", key {'?' if age is None else format_age(age)} old"
    limit = device.get(MAX_AGE_FIELD)
    if isinstance(limit, int):
        text += (
            f" (max {format_age(limit)}{', EXPIRED' if key_expired(entry, time.time()) else ''})"
        )
    return text


def _device_line(device: Mapping[str, Any]) -> str:
    role_tag = "[controller]" if device.get("role") == "controller" else "[target]"
    return (
        f"  {device.get('deviceId', '')}"
        f"  {_pad(printable(str(device.get('friendlyName', ''))), _NAME_COLUMN)}"
        f" {_pad(role_tag, _ROLE_COLUMN)} added {_date(device.get('addedAt', ''))}"
        f"{_key_age(device)}"
    )


def render_device_list(identity: Mapping[str, Any], devices: Sequence[Mapping[str, Any]]) -> str:
    """The full ``amesh list`` text (ends with a newline), exactly as the reference prints it."""
    backend = str(identity.get("storageBackend", ""))
    label = backend_label(backend)
    if is_software_backend(backend):
        label += " (software-only — not hardware-bound)"
    lines = [
        "",
        "  This device",
        _RULE,
        f"  Device ID     : {identity.get('deviceId', '')}",
        f"  Friendly Name : {printable(str(identity.get('friendlyName', '')))}",
        f"  Backend       : {label}",
        f"  Created       : {_date(identity.get('createdAt', ''))}",
        "",
    ]
    if not devices:
        lines += [
            "  No trusted devices yet.",
            "  Pair with another device using `amesh listen` + `amesh invite`.",
        ]
    else:
        lines += [f"  Trusted Devices ({len(devices)})", _RULE]
        lines += [_device_line(device) for device in devices]
        lines += [_RULE]
    lines.append("")
    return "\n".join(lines) + "\n"


@click.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List this device and the devices it trusts."""
    context = open_context()
    devices = context.devices()
    if as_json:
        emit("list", device=context.device_summary(), devices=devices)
        return
    click.echo(render_device_list(context.identity, devices), nl=False)


def _confirmed() -> bool:
    answer = prompt_line("  Are you sure? This device will lose access immediately. (y/N): ")
    return answer is not None and answer.lower() == "y"


@click.command("revoke")
@required_argument("device_id", "deviceId", "Device ID to revoke (e.g., am_1a2b3c4d5e6f7a8b)")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def revoke_command(device_id: str, assume_yes: bool, as_json: bool) -> None:
    """Remove a device (by id, or by a friendly name only it has) from the allow list; it
    loses access immediately."""
    if not assume_yes and not sys.stdin.isatty():
        raise CliError(
            "amesh revoke needs a confirmation and there is no terminal to ask on; "
            "pass --yes to revoke without asking.",
            "confirmation_needed",
        )
    context = open_context()
    device = context.find_device_or_name(device_id)
    device_id = str(device.get("deviceId", ""))
    out()
    out(f"  Device: {printable(str(device.get('friendlyName', '')))}")
    out(f"  Added:  {_date(device.get('addedAt', ''))}")
    out()
    if not assume_yes and not _confirmed():
        out("  Cancelled.")
        emit("cancelled", deviceId=device_id)
        return
    context.remove_device(device_id)
    out()
    out(f"  {device_id} removed from allow list.")
    out("  Allow list resealed.")
    out()
    out("  Revocation is effective immediately on this machine.")
    out("  If this device authenticates to other machines, revoke it there too.")
    out()
    emit(
        "revoked",
        deviceId=device_id,
        friendlyName=device.get("friendlyName"),
        role=device.get("role"),
    )
