"""``amesh listen`` (target) and ``amesh invite CODE`` (controller): interactive pairing.

The exchange itself is :func:`authmesh.pairing.listen` / ``invite`` (pairing v3
by default: one code typed once; ``--v2`` adds a verification code, ``--legacy`` is the
reference's v1); this module shows the code with a countdown, spinners while the relay works,
asks the operator, and records the peer in the allow list. Choices where the reference is
weak (pairing.md W7):

* When the target already has ``maxControllers`` controllers, the question is
  ``Replace …? (y/N)`` — Enter keeps the existing controllers (the reference defaults to
  replacing all of them) — and it is asked before anything is confirmed to the controller.
* Re-pairing a peer that is already in the allow list updates its entry instead of crashing.
* v3 and v2 write the controller's entry only once the target has accepted; v2 ``invite``
  also asks its operator (``--confirm``, the default) because a relay can forge v2's verdict.
  With ``--legacy`` the controller cannot know, so it writes the entry (as the reference
  does) and says how to undo it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from authmesh.cli._interaction import Spinner, ask
from authmesh.cli._options import json_option, relay_option, resolve_relay_url
from authmesh.cli._output import CliError, emit, out, print_warning
from authmesh.cli._session import DeviceView, open_context
from authmesh.core import ROLE_CONTROLLER
from authmesh.core._otc import is_valid_otc
from authmesh.core._text import printable
from authmesh.pairing import (
    InviteOptions,
    ListenOptions,
    PairingCode,
    PairingError,
    PairingResult,
    PeerIdentity,
    invite,
    listen,
)
from authmesh.pairing._interactive import CONFIRM_TIMEOUT_SECONDS
from authmesh.store import Signer

__all__ = ["LEGACY_WARNING", "invite_command", "listen_command", "run_exchange"]

LEGACY_WARNING = (
    "--legacy: a hostile relay can break this reference-compatible pairing (v1) and "
    "impersonate either machine even when both screens show the same code. Use it only to "
    "pair with a reference amesh peer, over a relay you run yourself."
)
_T = TypeVar("_T")
# Errors that hide the real cause of a failed v2 confirmation (the relay or the peer went away).
_TRANSPORT_CAUSES = ("relay_closed", "peer_disconnected", "session_expired")


def _failure(
    error: PairingError, *, waiting_for_peer: bool, refusal: str | None = None
) -> CliError:
    """One sentence for a failed exchange, naming the real cause where the library wraps it."""
    cause = error.__cause__
    if (
        error.code == "no_confirmation"
        and isinstance(cause, PairingError)
        and cause.code in _TRANSPORT_CAUSES
    ):
        error = cause
    if refusal is not None and error.code == "operator_declined":
        return CliError(refusal, error.code)
    if waiting_for_peer and error.code in ("timeout", "session_expired"):
        return CliError(
            "The pairing code expired before a controller joined; run `amesh listen` again "
            "for a new code.",
            "code_expired",
        )
    return CliError(str(error), error.code)


def run_exchange(
    exchange: Callable[[], Awaitable[_T]],
    spinner: Spinner,
    waiting: Callable[[], bool],
    refusal: Callable[[], str | None] = lambda: None,
) -> _T:
    """Run one relay exchange; every pairing failure becomes one sentence with its code.

    ``waiting()`` says whether no peer has joined yet (a timeout then means the code expired);
    ``refusal()`` is this operator's reason when they declined the peer.
    """

    async def guarded() -> _T:
        spinner.show("Connecting to the relay")
        try:
            return await exchange()
        finally:
            spinner.stop()

    try:
        return asyncio.run(guarded())
    except PairingError as error:
        raise _failure(error, waiting_for_peer=waiting(), refusal=refusal()) from None


def _record(view: DeviceView, result: PairingResult, *, replace_controllers: bool = False) -> None:
    view.record_peer(
        device_id=result.peer.device_id,
        public_key=result.peer.public_key_b64,
        name=result.peer.friendly_name,
        role=result.peer_role,
        protocol=result.protocol,
        replace_controllers=replace_controllers,
    )


def _protocol(v2_flag: bool, legacy: bool) -> int:
    if v2_flag and legacy:
        raise CliError("--v2 and --legacy choose different protocols; pass at most one.", "usage")
    return 1 if legacy else 2 if v2_flag else 3


def _prepare(
    ctx: click.Context, relay: str | None, protocol: int
) -> tuple[str, DeviceView, Signer, Spinner]:
    """What both sides of a pairing start with: relay URL, device, its signer, a spinner."""
    relay_url = resolve_relay_url(ctx, relay)
    view = open_context()
    signer = view.signer()
    if protocol == 1:
        print_warning(LEGACY_WARNING)
    return relay_url, view, signer, Spinner()


_V2_OPTION = click.option(
    "--v2",
    "v2_flag",
    is_flag=True,
    help="Pairing v2: a 6-digit code plus a verification code typed on the target (for "
    "authmesh peers older than v3).",
)
_LEGACY_OPTION = click.option(
    "--legacy",
    is_flag=True,
    help="Reference-compatible pairing v1 (a hostile relay can break it; only through a "
    "relay you run).",
)


def _checked_code(text: str, protocol: int) -> str:
    """The code as typed (parts joined, separators tolerated), checked before any I/O."""
    try:
        code = str(PairingCode.parse(text)) if protocol == 3 else text.strip()
    except PairingError as error:
        raise CliError(str(error), error.code) from None
    if protocol != 3 and not is_valid_otc(code):
        raise PairingError("invalid_code")
    return code


def _describe(peer: PeerIdentity) -> str:
    return f"{printable(peer.friendly_name)} ({peer.device_id})"


def emit_paired(result: PairingResult) -> None:
    """The ``paired`` JSON event of ``listen`` and ``invite``."""
    emit(
        "paired",
        deviceId=result.peer.device_id,
        friendlyName=result.peer.friendly_name,
        role=result.peer_role,
        protocol=result.pairing,
        confirmed=result.confirmed,
    )


class _TargetPrompts:
    """The target operator's side of ``listen``: code, countdown, questions, decisions."""

    def __init__(self, view: DeviceView, spinner: Spinner, protocol: int) -> None:
        self.view = view
        self.spinner = spinner
        self.protocol = protocol
        self.peer_joined = False
        self.replace_controllers = False
        self.refusal: str | None = None

    def on_code(self, code: str, lifetime: float) -> None:
        out()
        out(f"  Pairing code: {code}")
        out(f"  Expires in: {int(lifetime)} seconds")
        out()
        flag = " --v2" if self.protocol == 2 else " --legacy" if self.protocol == 1 else ""
        out(f"  On the controller, run:  amesh invite{flag} {code}")
        out()
        emit("code", code=code, expiresIn=int(lifetime))
        self.spinner.show("Waiting for a controller to join", lifetime)

    def on_peer_found(self) -> None:
        self.peer_joined = True
        emit("peer_joined")
        self.spinner.show("Controller joined; exchanging keys")

    async def accept_peer(self, peer: PeerIdentity) -> bool:
        """W7: over the limit, ask (y/N) before anything is confirmed; refusing saves nothing."""
        self.spinner.stop()
        out()
        out(f"  Controller: {_describe(peer)}")
        devices = self.view.devices()
        if any(device.get("deviceId") == peer.device_id for device in devices):
            return True  # re-pairing a known controller updates its entry
        controllers = sum(1 for device in devices if device.get("role") == ROLE_CONTROLLER)
        limit = int(self.view.identity.get("maxControllers", 1))
        if controllers < limit:
            return True
        them = "it" if controllers == 1 else "them"
        answer = await ask(
            f"  This device already has {controllers} controller(s), the maximum ({limit}).\n"
            f"  Replace {them} with {printable(peer.friendly_name)}? (y/N): "
        )
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            self.refusal = (
                f"This device already has the maximum number of controllers ({limit}); nothing "
                "was saved. Revoke one with `amesh revoke <deviceId>` or answer y to replace."
            )
            return False
        self.replace_controllers = True
        return True

    async def ask_sas(self, peer: PeerIdentity) -> str:
        answer = await ask("  Enter the verification code shown on the controller: ")
        if answer is None:
            raise CliError(
                "No verification code was entered; nothing was saved.", "operator_declined"
            )
        if self.protocol == 2:
            self.spinner.show("Confirming with the controller")
        return answer

    def on_sas_mismatch(self, attempts_left: int) -> None:
        self.spinner.stop()
        print_warning(
            f"That code does not match the controller's; check it and type it again "
            f"({attempts_left} attempt{'s' if attempts_left != 1 else ''} left)."
        )


@click.command("listen")
@relay_option
@_V2_OPTION
@_LEGACY_OPTION
@json_option
@click.pass_context
def listen_command(
    ctx: click.Context, relay: str | None, v2_flag: bool, legacy: bool, as_json: bool
) -> None:
    """Show a pairing code and wait for a controller (`amesh invite`) to pair."""
    protocol = _protocol(v2_flag, legacy)
    relay_url, view, signer, spinner = _prepare(ctx, relay, protocol)
    prompts = _TargetPrompts(view, spinner, protocol)
    options = ListenOptions(
        relay_url=relay_url,
        protocol=protocol,
        on_code=prompts.on_code,
        on_peer_found=prompts.on_peer_found,
        accept_peer=prompts.accept_peer,
        ask_sas=prompts.ask_sas,
        on_sas_mismatch=prompts.on_sas_mismatch,
    )
    result: PairingResult = run_exchange(
        lambda: listen(signer, view.context.identity.friendly_name, options),
        spinner,
        lambda: not prompts.peer_joined,
        lambda: prompts.refusal,
    )
    _record(view, result, replace_controllers=prompts.replace_controllers)
    out()
    out(
        f"  Paired. {_describe(result.peer)} is now a trusted controller of this device"
        f" (pairing v{result.pairing})."
    )
    emit_paired(result)


@click.command("invite")
@click.argument("code", nargs=-1, required=True)
@relay_option
@_V2_OPTION
@_LEGACY_OPTION
@click.option(
    "--confirm/--no-confirm",
    default=None,
    help="--v2 only: before saving, ask whether the target's screen says it paired (the "
    "default, since a relay can forge v2's acceptance); --no-confirm is for scripts that "
    "accept that risk.",
)
@json_option
@click.pass_context
def invite_command(
    ctx: click.Context,
    *,
    code: tuple[str, ...],
    relay: str | None,
    v2_flag: bool,
    legacy: bool,
    confirm: bool | None,
    as_json: bool,
) -> None:
    """Pair with a target that shows CODE (from `amesh listen`; spaces and dashes ignored)."""
    protocol = _protocol(v2_flag, legacy)
    code_text = _checked_code(" ".join(code), protocol)
    if confirm is not None and protocol != 2:
        raise CliError(
            "--confirm and --no-confirm apply to --v2 only: pairing v3 needs no confirmation "
            "(the relay cannot forge it) and legacy pairing never learns the target's verdict.",
            "usage",
        )
    relay_url, view, signer, spinner = _prepare(ctx, relay, protocol)

    def show_sas(sas: str, peer: PeerIdentity) -> None:
        spinner.stop()
        out()
        out(f"  Target: {_describe(peer)}")
        out(f"  Verification code: {sas}")
        out("  Type this code on the target when `amesh listen` asks for it.")
        emit(
            "verification_code", code=sas, deviceId=peer.device_id, friendlyName=peer.friendly_name
        )
        if protocol == 2:
            spinner.show("Waiting for the target to confirm the code", CONFIRM_TIMEOUT_SECONDS)

    def show_peer(peer: PeerIdentity) -> None:
        spinner.stop()
        out()
        out(f"  Target: {_describe(peer)}")
        emit("peer", deviceId=peer.device_id, friendlyName=peer.friendly_name)
        spinner.show("Waiting for the target to accept", CONFIRM_TIMEOUT_SECONDS)

    async def target_says_paired(peer: PeerIdentity) -> bool:
        # The acceptance came through the relay; the operator's eyes on the target did not.
        spinner.stop()
        answer = await ask(
            f"  Does {printable(peer.friendly_name)} say this machine is now a trusted controller? "
            "(y/N) "
        )
        return (answer or "").strip().lower() in ("y", "yes")

    def target_found() -> None:
        emit("peer_joined")
        spinner.show("Target found; exchanging keys")

    options = InviteOptions(
        relay_url=relay_url,
        protocol=protocol,
        show_sas=show_sas,
        on_peer=show_peer,
        on_peer_found=target_found,
        confirm_on_controller=target_says_paired
        if protocol == 2 and confirm is not False
        else None,
    )
    result: PairingResult = run_exchange(
        lambda: invite(code_text, signer, view.context.identity.friendly_name, options),
        spinner,
        lambda: False,
    )
    _record(view, result)
    out()
    out(f"  Paired. {_describe(result.peer)} added to the allow list as a target.")
    if not result.confirmed:
        out(
            "  Legacy pairing cannot tell whether the target accepted the code: if it reports a "
            f"mismatch, run `amesh revoke {result.peer.device_id}` here."
        )
    emit_paired(result)
