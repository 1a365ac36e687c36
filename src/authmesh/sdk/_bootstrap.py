"""Zero-touch start-up: ``bootstrap_if_needed()`` pairs a new machine from a token.

The reference's ``bootstrapIfNeeded`` (pairing.md §4.5), with its weaknesses fixed:

* the token is checked completely (issuer signature, issuer id, lifetime) before any
  key is created or socket opened;
* by default the target sends pairing v2's proof of key instead of the bearer token
  (``legacy=True`` speaks to a reference controller);
* every relay answer ends in a result or a :class:`~authmesh.pairing.PairingError`
  — a relay ``error`` never leaves the call hanging;
* on any failure the half-made identity is removed, so the next start tries again
  instead of running with an identity that trusts nobody;
* the controller entry's device id is derived from its key, not copied from ``iss``.

Everything about identities and allow lists goes through :mod:`authmesh.store`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from authmesh.core import ROLE_CONTROLLER, Device
from authmesh.pairing import PairingError, bootstrap, check_token
from authmesh.sdk._home import resolve_home
from authmesh.store import StoreError, create_identity, load_context, now_timestamp
from authmesh.store._files import remove_file

__all__ = ["TOKEN_VARIABLE", "bootstrap_if_needed", "bootstrap_if_needed_async"]

TOKEN_VARIABLE = "AMESH_BOOTSTRAP_TOKEN"  # noqa: S105 (a variable name, not a secret)
_log = logging.getLogger("authmesh.sdk")


async def bootstrap_if_needed_async(
    *,
    token: str | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout_seconds: float = 30.0,
    legacy: bool = False,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Create and pair this machine's identity from a bootstrap token, if it has none.

    ``token`` defaults to ``$AMESH_BOOTSTRAP_TOKEN`` (removed from ``os.environ``
    after use). Returns True when it bootstrapped, False when an identity already
    existed. Raises :class:`~authmesh.store.StoreError` or
    :class:`~authmesh.pairing.PairingError`, each with a one-sentence message.
    """
    env = os.environ if environ is None else environ
    from_environment = token is None
    token = token if token is not None else env.get(TOKEN_VARIABLE) or None
    amesh_home = resolve_home(home, env)
    if amesh_home.identity_file.exists():
        if token:
            _log.warning("[amesh] an identity already exists; ignoring the bootstrap token")
        return False
    if not token:
        raise StoreError(
            "no_identity",
            f"No amesh identity found and no {TOKEN_VARIABLE} set; run `amesh init` or "
            f"set {TOKEN_VARIABLE} to a token from `amesh provision`.",
        )
    decoded = check_token(token)  # before any key is made (the reference checks after)
    if not decoded.name:
        raise PairingError("invalid_token_format", "The bootstrap token names no device.")
    create_identity(decoded.name, home=amesh_home, environ=env)
    context = load_context(amesh_home, env)
    try:
        result = await bootstrap(token, context.signer, legacy=legacy, timeout=timeout_seconds)
        context.allow_list.add(
            Device.new(
                device_id=result.peer_device_id,
                public_key=result.peer_public_key_b64,
                friendly_name="controller",
                role=ROLE_CONTROLLER,
                added_at=now_timestamp(),
                protocol=result.protocol,
            )
        )
    except BaseException:
        # Roll back, so the next start bootstraps again rather than trusting nobody.
        context.keystore.delete(context.identity.key_alias)
        remove_file(amesh_home.allow_list_file)
        remove_file(amesh_home.identity_file)
        raise
    if from_environment and environ is None:
        os.environ.pop(TOKEN_VARIABLE, None)
    return True


def bootstrap_if_needed(
    *,
    token: str | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout_seconds: float = 30.0,
    legacy: bool = False,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Blocking form of :func:`bootstrap_if_needed_async`, for start-up code.

    Call it before serving or sending; inside a running event loop await
    :func:`bootstrap_if_needed_async` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            bootstrap_if_needed_async(
                token=token,
                home=home,
                timeout_seconds=timeout_seconds,
                legacy=legacy,
                environ=environ,
            )
        )
    raise PairingError(
        "invalid_argument",
        "bootstrap_if_needed() cannot run inside an event loop; "
        "await bootstrap_if_needed_async() instead.",
    )
