"""``amesh provision`` (controller) and ``amesh bootstrap TOKEN`` (new machine).

The reference's ``provision`` only mints a token and nothing ever answers it (pairing.md W2);
ours mints it, then watches the relay until a machine redeems it, checks that machine's proof
of key, acknowledges, and records the target only once the target confirmed that it finished
(its signed receipt; for a reference target, which sends none, the operator's answer on a
terminal) — or until the token expires. ``bootstrap`` is the CLI face of the target side: it
checks the token offline first (W3), creates this machine's identity (named by the token),
redeems the token, and trusts the issuing controller. If redeeming fails the new identity is
removed again, so a failed or replayed token leaves the machine as it was (with ``--force``,
which replaces an existing identity, the old identity is gone either way).

``--json`` (``provision -o json``, the reference's spelling, is kept as an alias): events
``token_issued`` and ``paired`` for provision; ``identity_created`` and ``paired`` for bootstrap.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime

import click

from authmesh.cli._init import create_announced, identity_fields, warn_if_software
from authmesh.cli._interaction import Spinner, ask
from authmesh.cli._options import (
    OclifChoice,
    check_name,
    json_option,
    relay_option,
    resolve_relay_url,
)
from authmesh.cli._output import (
    CliError,
    emit,
    is_json_mode,
    json_mode,
    out,
    print_warning,
)
from authmesh.cli._pair import run_exchange
from authmesh.cli._session import (
    BACKENDS,
    backend_label,
    discard_identity,
    identity_exists,
    open_context,
)
from authmesh.core import BootstrapTokenError
from authmesh.core._allowlist import format_timestamp
from authmesh.core._bootstrap_token import parse_ttl
from authmesh.core._text import printable
from authmesh.pairing import BootstrapResult, bootstrap, check_token, issue_token, provision
from authmesh.store import AmeshHome

__all__ = ["bootstrap_command", "provision_command"]


def _iso(unix_seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(unix_seconds, UTC))


@click.command("provision")
@click.option("--name", "-n", required=True, help="Friendly name the new machine will get.")
@click.option("--ttl", "-t", default="1h", show_default=True, help="Lifetime: 30m, 1h … 24h.")
@click.option(
    "--output",
    "-o",
    type=OclifChoice(("text", "json")),
    default="text",
    show_default=True,
    help="json: the same as --json (the reference's spelling).",
)
@click.option(
    "--allow-legacy-target",
    is_flag=True,
    help="Also accept reference SDK targets, which send no proof of their key (weaker).",
)
@relay_option
@json_option
@click.pass_context
def provision_command(
    ctx: click.Context,
    *,
    name: str,
    ttl: str,
    output: str,
    allow_legacy_target: bool,
    relay: str | None,
    as_json: bool,
) -> None:
    """Mint a single-use bootstrap token and wait until a new machine redeems it."""
    if output == "json":
        json_mode(True)
    check_name(name)
    try:
        ttl_seconds = parse_ttl(ttl)
    except BootstrapTokenError as error:
        raise CliError(str(error), error.code) from None
    relay_url = resolve_relay_url(ctx, relay)
    view = open_context()
    signer = view.signer()
    issued = issue_token(signer, name=name, relay_url=relay_url, ttl_seconds=ttl_seconds)
    emit(
        "token_issued",
        token=issued.token,
        jti=issued.jti,
        name=issued.name,
        issuedAt=_iso(issued.issued_at),
        expiresAt=_iso(issued.expires_at),
        relay=issued.relay,
    )
    if not is_json_mode():
        out()
        out(f"  Bootstrap token for {name} (single use, expires {_iso(issued.expires_at)}):")
        out()
        out(f"  {issued.token}")
        out()
        out("  On the new machine run `amesh bootstrap <token>`, or give an SDK service the")
        out("  token in AMESH_BOOTSTRAP_TOKEN. Keep it secret: it grants pairing with this device.")
        out()
    if allow_legacy_target:
        print_warning(
            "--allow-legacy-target: a reference SDK target proves nothing about its key, so a "
            "hostile relay could register its own key here as the target."
        )
    spinner = Spinner()

    def accept(result: BootstrapResult) -> None:
        view.record_peer(
            device_id=result.peer_device_id,
            public_key=result.peer_public_key_b64,
            name=result.name,
            role=result.peer_role,
            protocol=result.protocol,
        )

    result = run_exchange(
        lambda: provision(
            signer,
            issued,
            accept_target=accept,
            on_watching=lambda: spinner.show(
                "Waiting for the target to redeem the token", issued.expires_at - time.time()
            ),
            allow_legacy_target=allow_legacy_target,
            confirm_legacy=lambda result: _legacy_target_finished(result, spinner),
        ),
        spinner,
        lambda: False,
    )
    out(
        f"  {printable(result.name)} ({result.peer_device_id}) added to the allow list as a target."
    )
    emit(
        "paired",
        deviceId=result.peer_device_id,
        friendlyName=result.name,
        role=result.peer_role,
        protocol=result.protocol,
        confirmed=True,
    )


async def _legacy_target_finished(result: BootstrapResult, spinner: Spinner) -> bool:
    """A reference target sends no receipt: only its operator can say it finished."""
    spinner.stop()
    if not sys.stdin.isatty():
        return False
    answer = await ask(
        f"  {printable(result.name)} ({result.peer_device_id}) uses the reference bootstrap and "
        "cannot confirm it finished.\n  Does it report that bootstrap succeeded? (y/N) "
    )
    return (answer or "").strip().lower() in ("y", "yes")


@click.command("bootstrap")
@click.argument("token")
@click.option("--backend", "-b", type=OclifChoice(BACKENDS), help="Key storage backend.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace this machine's existing identity (and the devices it trusts).",
)
@relay_option
@json_option
@click.pass_context
def bootstrap_command(
    ctx: click.Context,
    *,
    token: str,
    backend: str | None,
    force: bool,
    relay: str | None,
    as_json: bool,
) -> None:
    """Set up this new machine from a bootstrap TOKEN minted by `amesh provision`."""
    if identity_exists() and not force:
        raise CliError(
            f"This machine already has an identity ({AmeshHome.from_env().identity_file}). "
            "To keep it, pair it instead: `amesh listen` here and `amesh invite <code>` on the "
            "controller. To replace it, run `amesh bootstrap --force <token>`.",
            "identity_exists",
        )
    decoded = check_token(token)
    override = relay or (ctx.find_root().obj or {}).get("relay")
    relay_url = resolve_relay_url(ctx, override) if override else decoded.relay
    name = decoded.name or "bootstrapped device"
    out()
    out(f"  Bootstrap token for {printable(name)} from {decoded.issuer}")
    created = create_announced(name, backend, force=force, max_controllers=1)
    view = open_context()
    try:
        signer = view.signer()
        spinner = Spinner()
        result = run_exchange(
            lambda: bootstrap(token, signer, relay_url=relay_url),
            spinner,
            lambda: False,
        )
        # The token does not carry the controller's name; the reference SDK records
        # "controller" too (pairing.md §4.5).
        view.record_peer(
            device_id=result.peer_device_id,
            public_key=result.peer_public_key_b64,
            name="controller",
            role=result.peer_role,
            protocol=result.protocol,
        )
    except BaseException:
        with contextlib.suppress(CliError):
            discard_identity(view)
        raise
    identity = created.identity
    out()
    out("Identity created.")
    out()
    out(f"  Device ID     : {identity['deviceId']}")
    out(f"  Backend       : {backend_label(identity['storageBackend'])}")
    out(f"  Friendly Name : {printable(identity['friendlyName'])}")
    out(f"  Controller    : {result.peer_device_id} (trusted)")
    out()
    warn_if_software(created, detected=backend is None)
    emit("identity_created", **identity_fields(created))
    emit(
        "paired",
        deviceId=result.peer_device_id,
        friendlyName="controller",
        role=result.peer_role,
        protocol=result.protocol,
        confirmed=True,
    )
