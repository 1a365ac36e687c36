"""Zero-touch provisioning with a bootstrap token: :func:`provision` and :func:`bootstrap`.

The controller mints a token (:func:`issue_token`), hands it to the new machine out of band,
and :func:`provision` watches the relay for it. The target runs :func:`bootstrap` with the
token alone. The ack is the reference's (pairing.md §4.6), so a reference SDK target accepts
our controller. Beyond the reference (W2, W3):

* the target validates the token completely (issuer signature, issuer id, lifetime) before
  any I/O, and can pin the issuer;
* **v2** (default): the target never sends the bearer token through the relay. It sends
  ``targetSig``, its own signature over ``jti``, its key and a digest of the token — proof that
  it holds the key *and* knows the token, which the relay does not, so the relay cannot
  substitute its own key;
* the controller answers only the token it watches and checks the proof;
* a v2 target that accepted the controller's signed ack sends a **receipt**: a second
  ``bootstrap_init`` for ``<jti>.done`` (:func:`receipt_jti`), signed by its key over the jti
  (:func:`receipt_statement`), which the controller watches before it acks. The controller
  lets the caller record the target (``accept_target``) only once that receipt verifies, so a
  relay that drops ``controllerSig`` (the reference relay does) cannot leave the controller
  trusting a target that never finished; the controller then acks the receipt, or rejects it
  when recording failed, and the target gives up its new identity on that rejection;
* every wait has a deadline and every relay answer ends in a result or a :class:`PairingError`.

Legacy (reference SDK) targets send the token itself, no proof and no receipt; a controller
accepts them only with ``allow_legacy_target=True``, and ``amesh provision`` records one only
when its operator, who can see the target, confirms that it finished (``confirm_legacy``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from authmesh.core import (
    BootstrapToken,
    BootstrapTokenError,
    InvalidKeyError,
    Signer,
    decode_token,
    device_id,
    mint_token,
    public_key_from_b64,
)
from authmesh.core._b64 import B64Error, b64decode, b64encode, b64url_encode
from authmesh.core._bootstrap_token import ERROR_CODES, sign_ack, validate_token, verify_ack
from authmesh.core._keys import verify
from authmesh.pairing._errors import MESSAGES, PairingError
from authmesh.pairing._hooks import call_hook
from authmesh.pairing._identity import MAX_FRIENDLY_NAME_CHARS, Role
from authmesh.pairing._relay_client import RelayConnection, relay_error

__all__ = [
    "ACK_TIMEOUT_SECONDS",
    "REWATCH_SECONDS",
    "BootstrapResult",
    "IssuedToken",
    "bootstrap",
    "check_token",
    "init_statement",
    "issue_token",
    "provision",
    "receipt_jti",
    "receipt_statement",
]

PROTOCOL = 2
ACK_TIMEOUT_SECONDS = 30.0  # the reference SDK's default bootstrap timeout
REWATCH_SECONDS = 240.0  # the relay forgets a watch after 300 s (pairing.md §4.7 step 1)
_JTI = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just minted by this controller, with what ``amesh provision`` prints."""

    token: str
    jti: str
    name: str
    relay: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """A completed bootstrap; the caller writes the allow-list entry (and identity) from it.

    ``peer_public_key`` is the other side's key: the target's on the controller, the
    token issuer's on the target. ``peer_role`` is the role to record for it. ``name`` is
    the friendly name the token gives the target. ``protocol`` is 2, or 1 for a legacy
    (reference SDK) target.
    """

    peer_public_key: bytes
    peer_role: Role
    name: str
    jti: str
    protocol: int

    @property
    def peer_public_key_b64(self) -> str:
        return b64encode(self.peer_public_key)

    @property
    def peer_device_id(self) -> str:
        return device_id(self.peer_public_key)


def _token_error(error: BootstrapTokenError) -> PairingError:
    return PairingError(error.code, str(error))


def _answer_error(code: object) -> PairingError:
    """A ``bootstrap_reject`` reason (from the relay or the controller) as our error."""
    if not isinstance(code, str):
        return PairingError("bootstrap_rejected")
    if code in MESSAGES:
        return PairingError(code)
    if code in ERROR_CODES:
        return _token_error(BootstrapTokenError(code))
    return PairingError("bootstrap_rejected")


def issue_token(
    signer: Signer, *, name: str, relay_url: str, ttl_seconds: int = 3600, now: float | None = None
) -> IssuedToken:
    """Mint a token for a new machine called ``name`` (``amesh provision``)."""
    issued_at = int(time.time() if now is None else now)
    try:
        token = mint_token(
            signer, name=name, relay=relay_url, ttl_seconds=ttl_seconds, now=issued_at
        )
    except BootstrapTokenError as error:
        raise _token_error(error) from error
    decoded = check_token(token, now=issued_at)
    return IssuedToken(token, _jti(decoded), name, relay_url, issued_at, issued_at + ttl_seconds)


def _jti(decoded: BootstrapToken) -> str:
    jti = decoded.jti
    if jti is None or not _JTI.fullmatch(jti):
        raise _token_error(BootstrapTokenError("invalid_token_format"))
    return jti


def check_token(
    token: str, *, now: float | None = None, expected_issuer: bytes | None = None
) -> BootstrapToken:
    """Everything a target can check offline, before any key is made or socket opened (W3).

    The signature is verified against the token's own ``pub`` — or against
    ``expected_issuer`` when the operator pinned the controller; ``iss`` must be the device
    id of that key, and the ``jti`` and ``relay`` claims must be usable.
    """
    moment = time.time() if now is None else now
    try:
        issuer = expected_issuer or decode_token(token).issuer_public_key()
        if issuer is None:
            raise PairingError("token_missing_controller_pubkey")
        decoded = validate_token(token, issuer, now=moment)
    except BootstrapTokenError as error:
        raise _token_error(error) from error
    if decoded.issuer_public_key() != issuer or decoded.issuer != device_id(issuer):
        raise PairingError("issuer_mismatch")
    _jti(decoded)
    relay, name = decoded.relay, decoded.name
    if relay is None or not relay.startswith(("ws://", "wss://")):
        raise _token_error(BootstrapTokenError("invalid_token_format"))
    if name is None or len(name) > MAX_FRIENDLY_NAME_CHARS:
        raise _token_error(BootstrapTokenError("invalid_token_format"))
    return decoded


def receipt_jti(jti: str) -> str:
    """The jti a v2 target's receipt travels under (the relay routes it like any init)."""
    return f"{jti}.done"


def receipt_statement(
    jti: str, target_public_key_b64: str, controller_public_key_b64: str
) -> bytes:
    """What the receipt's ``targetSig`` covers: this target finished pairing with that
    controller for that token."""
    return (
        f"amesh-bootstrap-done-v2\n{jti}\n{target_public_key_b64}\n{controller_public_key_b64}"
    ).encode()


def init_statement(jti: str, target_public_key_b64: str, token: str) -> bytes:
    """What ``targetSig`` covers; the token digest proves knowledge the relay cannot have."""
    digest = hashlib.sha256(b"amesh-bootstrap-v2/token\x00" + token.encode("utf-8")).digest()
    return (
        f"amesh-bootstrap-init-v2\n{jti}\n{target_public_key_b64}\n{b64url_encode(digest)}".encode()
    )


async def bootstrap(
    token: str,
    signer: Signer,
    *,
    relay_url: str | None = None,
    expected_issuer: bytes | None = None,
    legacy: bool = False,
    timeout: float = ACK_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.time,
) -> BootstrapResult:
    """Target side: present the token and wait for the controller's signed acknowledgement.

    ``relay_url`` overrides the token's relay; ``expected_issuer`` pins the controller key.
    ``legacy=True`` sends the reference SDK's init (the token itself, no proof of key).
    """
    decoded = check_token(token, now=clock(), expected_issuer=expected_issuer)
    jti = _jti(decoded)
    issuer, name, token_relay = decoded.issuer_public_key(), decoded.name, decoded.relay
    assert issuer is not None and name is not None and token_relay is not None  # check_token
    if issuer == signer.public_key:
        raise PairingError("own_key")
    own_b64 = b64encode(signer.public_key)
    init: dict[str, Any] = {"type": "bootstrap_init", "jti": jti}
    if legacy:
        init.update(token=token, targetPubKey=own_b64)
    else:
        target_sig = b64encode(signer.sign(init_statement(jti, own_b64, token)))
        init.update(targetPubKey=own_b64, targetSig=target_sig, protocol=PROTOCOL)
    async with await RelayConnection.open(relay_url or token_relay) as relay:
        await relay.send(init)
        _check_ack(await _answer_within(relay, timeout), jti, issuer, own_b64)
        if not legacy:
            await _send_receipt(
                relay, signer, jti, own_b64, controller_b64=b64encode(issuer), timeout=timeout
            )
    return BootstrapResult(issuer, "controller", name, jti, 1 if legacy else PROTOCOL)


async def _answer_within(relay: RelayConnection, timeout: float) -> dict[str, Any]:
    try:
        return await relay.receive(timeout)
    except PairingError as error:
        if error.code == "timeout":
            raise PairingError("bootstrap_timeout") from error
        raise


def _check_ack(answer: dict[str, Any], jti: str, issuer: bytes, own_b64: str) -> None:
    kind = answer.get("type")
    if kind == "bootstrap_reject":
        raise _answer_error(answer.get("error"))
    if kind == "error":
        raise relay_error(answer)  # the reference SDK would hang here forever (W8)
    if kind != "bootstrap_ack" or answer.get("jti") != jti:
        raise PairingError("protocol_violation")
    named = answer.get("controllerPubKey")
    if named is not None:
        try:
            if public_key_from_b64(named) != issuer:
                raise PairingError("controller_pubkey_mismatch")
        except (InvalidKeyError, TypeError) as exc:
            raise PairingError("controller_pubkey_mismatch") from exc
    if not verify_ack(issuer, answer.get("controllerSig"), own_b64, jti):
        raise PairingError("invalid_controller_signature")


async def _send_receipt(
    relay: RelayConnection,
    signer: Signer,
    jti: str,
    own_b64: str,
    *,
    controller_b64: str,
    timeout: float,
) -> None:
    """Tell the controller this side finished; fail only if it says it could not record us.

    Any other outcome (its ack, silence, a closed socket) leaves this side paired: the
    controller reports success only after it received this receipt, never before.
    """
    receipt_sig = b64encode(signer.sign(receipt_statement(jti, own_b64, controller_b64)))
    await relay.send(
        {
            "type": "bootstrap_init",
            "jti": receipt_jti(jti),
            "targetPubKey": own_b64,
            "targetSig": receipt_sig,
            "protocol": PROTOCOL,
        }
    )
    try:
        answer = await relay.receive(timeout)
    except PairingError:
        return
    if answer.get("type") == "bootstrap_reject" and answer.get("jti") == receipt_jti(jti):
        raise _answer_error(answer.get("error"))


async def provision(
    signer: Signer,
    issued: IssuedToken,
    *,
    accept_target: Callable[[BootstrapResult], Any] | None = None,
    on_watching: Callable[[], Any] | None = None,
    allow_legacy_target: bool = False,
    confirm_legacy: Callable[[BootstrapResult], bool | Awaitable[bool]] | None = None,
    read_timeout: float = 10.0,
    receipt_timeout: float = ACK_TIMEOUT_SECONDS,
    rewatch_seconds: float = REWATCH_SECONDS,
    clock: Callable[[], float] = time.time,
) -> BootstrapResult:
    """Controller side: watch the relay for ``issued`` until it is used or expires.

    The watch is renewed on a fresh socket every ``rewatch_seconds`` (below the relay's
    watch lifetime, 300 s by default).

    ``accept_target(result)`` records the target. It runs only once the target proved it
    finished: after its signed receipt (v2; without one, ``not_confirmed`` and nothing is
    recorded). A legacy target sends none: it is recorded after ``confirm_legacy(result)``
    returned True (False: ``not_confirmed``), or right after the ack when there is no
    ``confirm_legacy`` (the caller then knows only that the ack was sent). If
    ``accept_target`` raises, a v2 target is told ``bootstrap_rejected`` and the error
    propagates.
    """
    watching_announced = False
    while True:
        # A fresh socket per watch period: closing the old one frees the watch, so this works
        # whether or not the relay refreshes a repeated watch (the reference does, ours not).
        async with await RelayConnection.open(issued.relay) as relay:
            await _watch(relay, issued.jti, read_timeout)
            if not watching_announced:
                watching_announced = True
                await call_hook(on_watching)
            message = await _next_init(relay, issued, rewatch_seconds, clock)
            if message is None:
                continue
            result = await _answer(
                relay,
                signer,
                issued,
                message,
                allow_legacy_target=allow_legacy_target,
                clock=clock,
            )
            if result.protocol == PROTOCOL:
                await _await_receipt(relay, signer, issued.jti, result, receipt_timeout)
            elif confirm_legacy is not None and not await call_hook(confirm_legacy, result):
                raise PairingError("not_confirmed")
            await _record(relay, signer, issued.jti, result, accept_target)
            return result


async def _reject(relay: RelayConnection, jti: str, error: BaseException) -> None:
    code = error.code if isinstance(error, PairingError) else "bootstrap_rejected"
    await relay.send({"type": "bootstrap_reject", "jti": jti, "error": code})


async def _answer(
    relay: RelayConnection,
    signer: Signer,
    issued: IssuedToken,
    message: dict[str, Any],
    *,
    allow_legacy_target: bool,
    clock: Callable[[], float],
) -> BootstrapResult:
    """Check the init and acknowledge it (or reject it); for v2, watch the receipt first."""
    try:
        result = _check_init(signer, issued, message, allow_legacy_target, clock())
    except PairingError as error:
        await _reject(relay, issued.jti, error)
        raise
    if result.protocol == PROTOCOL:
        await _watch(relay, receipt_jti(issued.jti), ACK_TIMEOUT_SECONDS)
    own_b64 = b64encode(signer.public_key)
    await relay.send(
        {
            "type": "bootstrap_ack",
            "jti": issued.jti,
            "publicKey": own_b64,
            "controllerPubKey": own_b64,
            "controllerSig": sign_ack(signer, result.peer_public_key_b64, issued.jti),
        }
    )
    return result


async def _await_receipt(
    relay: RelayConnection, signer: Signer, jti: str, result: BootstrapResult, timeout: float
) -> None:
    """The target's signed receipt for ``jti``, or ``not_confirmed``: nothing is recorded."""
    try:
        message = await relay.receive(timeout)
    except PairingError as error:
        raise PairingError("not_confirmed") from error
    statement = receipt_statement(jti, result.peer_public_key_b64, b64encode(signer.public_key))
    proof = message.get("targetSig")
    try:
        signature = b64decode(proof) if isinstance(proof, str) else b""
    except B64Error:
        signature = b""
    if (
        message.get("type") != "bootstrap_init"
        or message.get("jti") != receipt_jti(jti)
        or message.get("targetPubKey") != result.peer_public_key_b64
        or not verify(result.peer_public_key, signature, statement)
    ):
        raise PairingError("not_confirmed")


async def _record(
    relay: RelayConnection,
    signer: Signer,
    jti: str,
    result: BootstrapResult,
    accept_target: Callable[[BootstrapResult], Any] | None,
) -> None:
    """Record the target; answer its receipt (a v2 target gives up when recording failed)."""
    receipt = receipt_jti(jti)
    try:
        await call_hook(accept_target, result)
    except Exception as error:
        if result.protocol == PROTOCOL:
            await _reject(relay, receipt, error)
        raise
    if result.protocol == PROTOCOL:
        own_b64 = b64encode(signer.public_key)
        await relay.send(
            {
                "type": "bootstrap_ack",
                "jti": receipt,
                "publicKey": own_b64,
                "controllerPubKey": own_b64,
            }
        )


async def _watch(relay: RelayConnection, jti: str, timeout: float) -> None:
    await relay.send({"type": "bootstrap_watch", "jti": jti})
    reply = await relay.receive(timeout)
    if reply.get("type") == "error":
        raise relay_error(reply)
    if reply.get("type") != "bootstrap_watching" or reply.get("jti") != jti:
        raise PairingError("protocol_violation")


async def _next_init(
    relay: RelayConnection, issued: IssuedToken, period: float, clock: Callable[[], float]
) -> dict[str, Any] | None:
    """The next ``bootstrap_init``, None when the watch period ended; fails at expiry."""
    remaining = issued.expires_at - clock()
    if remaining <= 0:
        raise PairingError("provision_expired")
    try:
        message = await relay.receive(min(remaining, period))
    except PairingError as error:
        if error.code != "timeout":
            raise
        if issued.expires_at - clock() <= 0:
            raise PairingError("provision_expired") from error
        return None
    kind = message.get("type")
    if kind == "error":
        raise relay_error(message)
    if kind != "bootstrap_init":
        raise PairingError("protocol_violation")
    return message


def _target_key(message: dict[str, Any]) -> tuple[str, bytes]:
    """The target's public key in ``bootstrap_init``, as sent and decoded."""
    target_b64 = message.get("targetPubKey")
    try:
        if not isinstance(target_b64, str):
            raise InvalidKeyError("targetPubKey must be a string")
        return target_b64, public_key_from_b64(target_b64)
    except InvalidKeyError as exc:
        raise PairingError("bad_peer_key") from exc


def _check_init(
    signer: Signer,
    issued: IssuedToken,
    message: dict[str, Any],
    allow_legacy_target: bool,
    now: float,
) -> BootstrapResult:
    """The controller's checks on a forwarded ``bootstrap_init`` (pairing.md §4.7 + W3)."""
    if message.get("jti") != issued.jti:
        raise PairingError("wrong_token")
    if now >= issued.expires_at:
        raise PairingError("token_expired", str(BootstrapTokenError("token_expired")))
    target_b64, target_key = _target_key(message)
    if target_key == signer.public_key:
        raise PairingError("own_key")
    proof = message.get("targetSig")
    if proof is None:
        if not allow_legacy_target:
            raise PairingError("target_proof_required")
        if message.get("token") != issued.token:
            raise PairingError("wrong_token")
        protocol = 1
    else:
        try:
            signature = b64decode(proof) if isinstance(proof, str) else b""
        except B64Error:
            signature = b""
        if not verify(target_key, signature, init_statement(issued.jti, target_b64, issued.token)):
            raise PairingError("invalid_target_signature")
        protocol = PROTOCOL
    return BootstrapResult(target_key, "target", issued.name, issued.jti, protocol)
