"""``amesh init``: create this device's identity (sdk-keystore.md §9.1).

Output is the reference's line for line. Deliberate differences (sdk-keystore.md W13): a
passphrase taken from ``AUTH_MESH_PASSPHRASE`` is never written to disk (the warning says so),
``--force`` removes the replaced identity's key material, and a backend that cannot work here
(``tpm2`` without tpm2-tools, macOS backends on Linux) is refused with one sentence, exit 2,
instead of the reference's crash with exit 1. The name is checked against the limit pairing
carries, so a name that pairing would refuse is refused here, before anything is created. The
hint for hardware-backed storage names only what authmesh supports (TPM 2.0 on Linux).
"""

from __future__ import annotations

from typing import Any

import click

from authmesh.cli._options import AtLeastOne, OclifChoice, check_name, json_option
from authmesh.cli._output import CliError, emit, out, print_warning
from authmesh.cli._session import (
    BACKENDS,
    CreatedIdentity,
    backend_label,
    create_identity,
    identity_exists,
)
from authmesh.store._context import is_software_backend

__all__ = [
    "create_announced",
    "identity_fields",
    "init_command",
    "software_backend_warning",
    "warn_if_software",
]

_HARDWARE_HINT = (
    "  For hardware-backed storage, use Linux with TPM 2.0 (tpm2-tools\n"
    "  and /dev/tpmrm0), then re-run `amesh init --force`."
)


def software_backend_warning(*, detected: bool, passphrase_file: str | None) -> str:
    """The reference's warning for the encrypted-file backend, for the way it was chosen.

    ``passphrase_file`` is where the generated passphrase was stored, or ``None`` when the
    operator supplied it through ``AUTH_MESH_PASSPHRASE`` (which we never persist).
    """
    head = (
        "Using encrypted-file backend — keys are SOFTWARE-PROTECTED only.\n"
        "  Private key is encrypted on disk but not bound to hardware.\n"
    )
    if passphrase_file is None:
        return head + (
            "  The passphrase comes from AUTH_MESH_PASSPHRASE and is\n"
            "  not stored on disk: set it for every amesh command and\n"
            "  service on this machine.\n" + _HARDWARE_HINT
        )
    if detected:
        return head + (
            "  For hardware-backed storage, use Linux with TPM 2.0 (tpm2-tools and "
            "/dev/tpmrm0), then re-run `amesh init --force`."
        )
    return head + (
        f"  Passphrase is stored in {passphrase_file} with mode 0o400.\n"
        "  For true hardware-level protection move this file to a secrets\n"
        "  manager / tmpfs / separate mount, or set AUTH_MESH_PASSPHRASE on\n"
        "  each run instead (see AMESH_PASSPHRASE_FILE).\n" + _HARDWARE_HINT
    )


def create_announced(
    name: str, backend: str | None, *, force: bool, max_controllers: int
) -> CreatedIdentity:
    """Create the identity, printing the reference's key and backend lines as it goes."""
    out()
    out("Generating P-256 keypair...")
    if backend is not None:
        out(f"  Using backend: {backend_label(backend)}")
    else:
        out()
        out("Detecting key storage backend:")
    return create_identity(
        name=name, backend=backend, force=force, max_controllers=max_controllers, progress=out
    )


def warn_if_software(created: CreatedIdentity, *, detected: bool) -> None:
    """The reference's stderr warning when the key is only software-protected."""
    if is_software_backend(created.identity["storageBackend"]):
        print_warning(
            software_backend_warning(detected=detected, passphrase_file=created.passphrase_file)
        )


@click.command("init")
@click.option("--name", "-n", required=True, help="Friendly name for this device.")
@click.option("--backend", "-b", type=OclifChoice(BACKENDS), help="Key storage backend.")
@click.option("--force", is_flag=True, help="Replace an existing identity (and its key).")
@click.option(
    "--max-controllers",
    type=AtLeastOne(),
    default=1,
    show_default=True,
    help="How many controllers may pair with this device.",
)
@json_option
def init_command(
    name: str, backend: str | None, force: bool, max_controllers: int, as_json: bool
) -> None:
    """Create this device's identity and key."""
    check_name(name)
    if identity_exists() and not force:
        raise CliError("Identity already exists. Use --force to overwrite.", "identity_exists")
    created = create_announced(name, backend, force=force, max_controllers=max_controllers)
    identity = created.identity
    out()
    out("Identity created.")
    out()
    out(f"  Device ID     : {identity['deviceId']}")
    out(f"  Public Key    : {identity['publicKey'][:20]}...")
    out(f"  Backend       : {backend_label(identity['storageBackend'])}")
    out(f"  Friendly Name : {identity['friendlyName']}")
    out()
    warn_if_software(created, detected=backend is None)
    out()
    out("Next steps:")
    out("  Target:     run `amesh listen`, then `amesh invite` from your controller")
    out("  Controller: run `amesh listen` on a target first, then `amesh invite` here")
    emit("identity_created", **identity_fields(created))


def identity_fields(created: CreatedIdentity) -> dict[str, Any]:
    """The ``identity_created`` JSON fields (never the passphrase itself)."""
    identity = created.identity
    fields = {
        name: identity.get(name)
        for name in ("deviceId", "publicKey", "friendlyName", "storageBackend", "createdAt")
    }
    fields["softwareOnly"] = is_software_backend(identity["storageBackend"])
    fields["passphraseFile"] = created.passphrase_file
    return fields
