"""``amesh listen`` (target) and ``amesh invite CODE`` (controller): interactive pairing.

The exchange itself is :func:`authmesh.pairing.interactive.listen` / ``invite`` (pairing v2
by default, the reference's v1 with ``--legacy``); this module shows the code with a countdown,
spinners while the relay works, the verification code, asks the operator, and records the
peer in the allow list. Choices where the reference is weak (pairing.md W7):

* When the target already has ``maxControllers`` controllers, the question is
  ``Replace …? (y/N)`` — Enter keeps the existing controllers (the reference defaults to
  replacing all of them) — and it is asked before the code is typed, so a refusal never
  confirms the pairing to the controller.
* Re-pairing a peer that is already in the allow list updates its entry instead of crashing.
* v2's explicit confirmation means the controller writes its entry only after the target's
  operator accepted the code; with ``--legacy`` the controller cannot know, so it writes the
  entry (as the reference does) and says how to undo it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from authmesh.cli.interaction import Spinner, ask
from authmesh.cli.options import json_option, relay_option, resolve_relay_url
from authmesh.cli.output import CliError, emit, out, print_warning, printable
from authmesh.cli.session import DeviceView, open_context
from authmesh.core.allowlist import ROLE_CONTROLLER
from authmesh.core.otc import is_valid_otc
from authmesh.pairing.errors import PairingError
from authmesh.pairing.identity import PairingResult, PeerIdentity
from authmesh.pairing.interactive import CONFIRM_TIMEOUT_SECONDS, invite, listen
from authmesh.store.keystore import Signer

__all__ = ["LEGACY_WARNING", "invite_command", "listen_command", "run_exchange"]

LEGACY_WARNING = (
    "--legacy: a hostile relay can break this reference-compatible pairing (v1) and "
    "impersonate either machine even when both screens show the same code. Use it only to "
    "pair with a reference amesh peer, over a relay you run yourself."
)
_T = TypeVar("_T")
# Errors that hide the real cause of a failed v2 confirmation (the relay or the peer went away).
_TRANSPORT_CAUSES = ("relay_closed", "peer_disconnected", "session_expired")


def _failure(error: PairingError, *, waiting_for_peer: bool) -> CliError:
    """One sentence for a failed exchange, naming the real cause where the library wraps it."""
    cause = error.__cause__
    if (
        error.code == "no_confirmation"
        and isinstance(cause, PairingError)
        and cause.code in _TRANSPORT_CAUSES
    ):
        error = cause
    if waiting_for_peer and error.code in ("timeout", "session_expired"):
        return CliError(
            "The pairing code expired before a controller joined; run `amesh listen` again "
            "for a new code.",
            "code_expired",
        )
    return CliError(str(error), error.code)


def run_exchange(
    exchange: Callable[[], Awaitable[_T]], spinner: Spinner, waiting: Callable[[], bool]
) -> _T:
    """Run one relay exchange; every pairing failure becomes one sentence with its code.

    ``waiting()`` says whether no peer has joined yet (a timeout then means the code expired).
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
        raise _failure(error, waiting_for_peer=waiting()) from None


def _record(view: DeviceView, result: PairingResult, *, replace_controllers: bool = False) -> None:
    view.record_peer(
        device_id=result.peer.device_id,
        public_key=result.peer.public_key_b64,
        name=result.peer.friendly_name,
        role=result.peer_role,
        protocol=result.protocol,
        replace_controllers=replace_controllers,
    )


def _prepare(
    ctx: click.Context, relay: str | None, legacy: bool
) -> tuple[str, DeviceView, Signer, Spinner]:
    """What both sides of a pairing start with: relay URL, device, its signer, a spinner."""
    relay_url = resolve_relay_url(ctx, relay)
    view = open_context()
    signer = view.signer()
    if legacy:
        print_warning(LEGACY_WARNING)
    return relay_url, view, signer, Spinner()


def _describe(peer: PeerIdentity) -> str:
    return f"{printable(peer.friendly_name)} ({peer.device_id})"


def emit_paired(result: PairingResult) -> None:
    """The ``paired`` JSON event of ``listen`` and ``invite``."""
    emit(
        "paired",
        deviceId=result.peer.device_id,
        friendlyName=result.peer.friendly_name,
        role=result.peer_role,
        protocol=result.protocol,
        confirmed=result.confirmed,
    )


class _TargetPrompts:
    """The target operator's side of ``listen``: code, countdown, questions, decisions."""

    def __init__(self, view: DeviceView, spinner: Spinner, legacy: bool) -> None:
        self.view = view
        self.spinner = spinner
        self.legacy = legacy
        self.peer_joined = False
        self.replace_controllers = False

    def on_code(self, code: str, lifetime: float) -> None:
        out()
        out(f"  Pairing code: {code}")
        out(f"  Expires in: {int(lifetime)} seconds")
        out()
        out(f"  On the controller, run:  amesh invite {code}")
        out()
        emit("code", code=code, expiresIn=int(lifetime))
        self.spinner.show("Waiting for a controller to join", lifetime)

    def on_peer_found(self) -> None:
        self.peer_joined = True
        emit("peer_joined")
        self.spinner.show("Controller joined; exchanging keys")

    async def _check_controller_limit(self, peer: PeerIdentity) -> None:
        """W7: over the limit, ask (y/N) before the code is typed; refusing saves nothing."""
        devices = self.view.devices()
        if any(device.get("deviceId") == peer.device_id for device in devices):
            return  # re-pairing a known controller updates its entry
        controllers = sum(1 for device in devices if device.get("role") == ROLE_CONTROLLER)
        limit = int(self.view.identity.get("maxControllers", 1))
        if controllers < limit:
            return
        them = "it" if controllers == 1 else "them"
        answer = await ask(
            f"  This device already has {controllers} controller(s), the maximum ({limit}).\n"
            f"  Replace {them} with {printable(peer.friendly_name)}? (y/N): "
        )
        if answer is None or answer.strip().lower() not in ("y", "yes"):
            raise CliError(
                f"This device already has the maximum number of controllers ({limit}); nothing "
                "was saved. Revoke one with `amesh revoke <deviceId>` or answer y to replace.",
                "operator_declined",
            )
        self.replace_controllers = True

    async def ask_sas(self, peer: PeerIdentity) -> str:
        self.spinner.stop()
        out()
        out(f"  Controller: {_describe(peer)}")
        await self._check_controller_limit(peer)
        answer = await ask("  Enter the verification code shown on the controller: ")
        if answer is None:
            raise CliError(
                "No verification code was entered; nothing was saved.", "operator_declined"
            )
        if not self.legacy:
            self.spinner.show("Confirming with the controller")
        return answer


@click.command("listen")
@relay_option
@click.option("--legacy", is_flag=True, help="Reference-compatible pairing v1 (weaker).")
@json_option
@click.pass_context
def listen_command(ctx: click.Context, relay: str | None, legacy: bool, as_json: bool) -> None:
    """Show a pairing code and wait for a controller (`amesh invite`) to pair."""
    relay_url, view, signer, spinner = _prepare(ctx, relay, legacy)
    prompts = _TargetPrompts(view, spinner, legacy)
    result: PairingResult = run_exchange(
        lambda: listen(
            signer,
            view.context.identity.friendly_name,
            relay_url=relay_url,
            ask_sas=prompts.ask_sas,
            on_code=prompts.on_code,
            on_peer_found=prompts.on_peer_found,
            legacy=legacy,
        ),
        spinner,
        lambda: not prompts.peer_joined,
    )
    _record(view, result, replace_controllers=prompts.replace_controllers)
    out()
    out(
        f"  Paired. {_describe(result.peer)} is now a trusted controller of this device"
        f" (pairing v{result.protocol})."
    )
    emit_paired(result)


@click.command("invite")
@click.argument("code")
@relay_option
@click.option("--legacy", is_flag=True, help="Reference-compatible pairing v1 (weaker).")
@click.option(
    "--confirm",
    is_flag=True,
    help="Ask whether the target's screen says it paired before saving (defeats a relay "
    "forging the target's acceptance).",
)
@json_option
@click.pass_context
def invite_command(
    ctx: click.Context, code: str, relay: str | None, legacy: bool, confirm: bool, as_json: bool
) -> None:
    """Pair with a target that shows CODE (from `amesh listen`)."""
    if not is_valid_otc(code):
        raise PairingError("invalid_code")
    if confirm and legacy:
        raise CliError(
            "--confirm needs pairing v2 (legacy pairing never learns the target's verdict); "
            "drop --legacy or --confirm.",
            "usage",
        )
    relay_url, view, signer, spinner = _prepare(ctx, relay, legacy)

    def show_sas(sas: str, peer: PeerIdentity) -> None:
        spinner.stop()
        out()
        out(f"  Target: {_describe(peer)}")
        out(f"  Verification code: {sas}")
        out("  Type this code on the target when `amesh listen` asks for it.")
        emit(
            "verification_code",
            code=sas,
            deviceId=peer.device_id,
            friendlyName=peer.friendly_name,
        )
        if not legacy:
            spinner.show("Waiting for the target to confirm the code", CONFIRM_TIMEOUT_SECONDS)

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

    result: PairingResult = run_exchange(
        lambda: invite(
            code,
            signer,
            view.context.identity.friendly_name,
            relay_url=relay_url,
            show_sas=show_sas,
            on_peer_found=target_found,
            confirm_on_controller=target_says_paired if confirm else None,
            legacy=legacy,
        ),
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
