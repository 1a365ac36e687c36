"""The one exception every pairing and bootstrap failure ends in.

``PairingError.code`` is stable and machine-readable; ``str(error)`` is one sentence for the
operator that names the problem and the fix. Nothing secret (codes, keys, tokens) is ever
put in a message.
"""

from __future__ import annotations

from authmesh.errors import AuthMeshError

__all__ = ["MAX_FRIENDLY_NAME_CHARS", "MESSAGES", "PairingError"]

_RERUN = "run the pairing again"
# Where a relay claims the peer cannot do better: the cost of legacy pairing and how to check.
_CHECK = (
    "legacy pairing (--legacy) lets a hostile relay impersonate either machine, so use it only "
    "with a reference peer through a relay you run yourself — check that --relay or "
    "AMESH_RELAY_URL names your relay and which amesh the other machine runs (`amesh --version`)"
)
# Kept here (not in identity.py) because identity.py imports this module.
MAX_FRIENDLY_NAME_CHARS = 256

MESSAGES: dict[str, str] = {
    # Relay and transport.
    "relay_unreachable": "Could not reach the relay; check the relay URL (--relay or "
    "AMESH_RELAY_URL) and your network.",
    "relay_unavailable": "The relay is up but cannot serve pairing right now (its shared state "
    "store is unavailable); try again later or use another relay.",
    "relay_closed": f"The relay closed the connection before pairing finished; {_RERUN}.",
    "timeout": "The peer did not answer in time; make sure both machines are running and "
    f"{_RERUN}.",
    "peer_disconnected": f"The other machine left before pairing finished; {_RERUN}.",
    "session_expired": f"The pairing session expired on the relay; {_RERUN} and finish within "
    "the code's lifetime.",
    "rate_limited": "The relay is rate limiting this address; wait a minute and try again.",
    "relay_capacity": "The relay is at capacity; try again later or use another relay.",
    "relay_error": f"The relay refused the request; {_RERUN}.",
    "invalid_code": "The pairing code must be exactly six digits; check the code shown by "
    "`amesh listen`.",
    "code_not_found": "No machine is waiting with that code; check the code and that "
    "`amesh listen` is still running.",
    "code_in_use": "That pairing code is already in use on the relay; start `amesh listen` "
    "again for a new code.",
    "peer_already_connected": "Another machine already joined with that code; start "
    "`amesh listen` again for a new code.",
    "missing_dependency": "Pairing needs the websockets package; install authmesh with the "
    "relay extra (pip install 'authmesh[relay]').",
    # Protocol negotiation. A relay can lie about what the peer speaks, so no message sends
    # the operator to a weaker protocol without saying what it costs (issue 10 item 8).
    "peer_is_legacy": "The other machine did not answer in pairing v3 or v2: it is a reference "
    f"amesh peer or an old authmesh, or the relay is pushing you to a weaker protocol; {_CHECK}.",
    "peer_is_v2": "The other machine speaks pairing v2 (an older authmesh, or `amesh listen "
    "--v2`): update it, or run both sides with --v2, which adds a verification code that the "
    "target's operator must type and check.",
    "peer_not_v2": "The relay says the target is not waiting with pairing v2: if it shows a "
    "14-digit code it runs pairing v3, so run `amesh invite` without --v2 and type the whole "
    f"code; otherwise {_CHECK}.",
    "peer_left_before_v3": "The other machine left without answering pairing v3: it may run "
    "the reference amesh or an authmesh older than v3 (check `amesh --version` there), or the "
    f"relay dropped it; {_RERUN}.",
    "peer_requires_v2": "The other machine requires a newer pairing protocol; rerun without "
    "--legacy on both machines.",
    "relay_without_v2": "The relay did not confirm pairing v2: it is a reference relay, or a "
    "hostile one hiding the protocol; pair with pairing v3 (the default, which works through "
    f"any relay), or {_CHECK}.",
    "short_code": "That is a 6-digit code from pairing v2, legacy pairing or the reference; "
    "`amesh listen` shows a 14-digit code such as 123456-1234-5678, type all of it (for a "
    "target running `amesh listen --v2`, run `amesh invite --v2 CODE`).",
    "invalid_v3_code": "The pairing code must be the 14 digits `amesh listen` shows, such as "
    "123456-1234-5678 (spaces and dashes are ignored); check it and try again.",
    "name_too_long": f"This machine's name has more than {MAX_FRIENDLY_NAME_CHARS} characters, "
    "more than pairing accepts; give it a shorter name and pair again.",
    "peer_name_too_long": f"The other machine's name has more than {MAX_FRIENDLY_NAME_CHARS} "
    "characters, more than pairing accepts; give it a shorter name and pair again.",
    # Handshake integrity.
    "protocol_violation": f"The peer sent an unexpected message; {_RERUN}.",
    "decrypt_failed": f"A pairing message failed authentication (tampered or corrupted); {_RERUN}.",
    "bad_peer_key": f"The peer sent an invalid public key; {_RERUN}.",
    "bad_peer_signature": f"The peer's identity signature is invalid; {_RERUN}.",
    "own_key": "The peer presented this machine's own key (a reflected message); pair two "
    "different machines.",
    "clock_skew": "The two machines' clocks differ by more than 5 minutes; fix the clock and "
    f"{_RERUN}.",
    "commitment_mismatch": "The peer's key does not match its earlier commitment (possible "
    f"man-in-the-middle); {_RERUN} on a trusted network.",
    "sas_mismatch": "The verification code did not match after every attempt — possible "
    f"man-in-the-middle; nothing was saved, {_RERUN}.",
    "code_mismatch": "The pairing code typed on the controller differs from the one the target "
    "shows (a typo, or someone else tried to join); nothing was saved, run `amesh listen` "
    "again for a new code.",
    "role_mismatch": "The pairing messages came from the wrong side (a relay rewriting the "
    f"exchange); nothing was saved, {_RERUN} through a relay you trust.",
    "peer_declined": "The other machine's operator declined this pairing; nothing was saved.",
    "peer_rejected": "The target rejected the verification code (possible man-in-the-middle); "
    f"nothing was saved, {_RERUN}.",
    "no_confirmation": "The target did not confirm the verification code in time; nothing was "
    f"saved, {_RERUN}.",
    "operator_declined": f"Pairing was cancelled on this machine; nothing was saved, {_RERUN}.",
    # Bootstrap.
    "token_already_used": "This bootstrap token was already used; mint a new one with "
    "`amesh provision`.",
    "no_watcher": "The controller is not waiting for this token; run `amesh provision` on the "
    "controller and use the new token.",
    "relay_overloaded": "The relay cannot accept more bootstrap tokens right now; try again later.",
    "bootstrap_rejected": "The controller rejected this machine's bootstrap request; mint a new "
    "token with `amesh provision`.",
    "bootstrap_timeout": "The controller did not answer the bootstrap request in time; check "
    "that `amesh provision` is still running and try again.",
    "invalid_controller_signature": "The bootstrap answer is not signed by the token's "
    "controller (possible relay tampering); mint a new token and try again.",
    "controller_pubkey_mismatch": "The bootstrap answer names a different controller than the "
    "token (possible relay tampering); mint a new token and try again.",
    "token_missing_controller_pubkey": "The bootstrap token does not name its controller's "
    "key; mint a new token with `amesh provision`.",
    "issuer_mismatch": "The bootstrap token was not issued by the expected controller; use a "
    "token minted by that controller.",
    "invalid_target_signature": "The bootstrap request is not signed by the target's key or "
    "was altered (possible relay tampering); mint a new token and try again.",
    "target_proof_required": "The target used the legacy bootstrap without proof of its key; "
    "update it, or allow legacy targets explicitly.",
    "wrong_token": "The bootstrap request is for a different token than the one being watched; "
    "use the token printed by this `amesh provision`.",
    "not_confirmed": "The target did not confirm that it finished the bootstrap (a relay that "
    "drops the controller's signature, or a target that gave up); nothing was recorded here, so "
    "mint a new token with `amesh provision` and bootstrap again through an authmesh relay.",
    "provision_expired": "The bootstrap token expired before any machine used it; run "
    "`amesh provision` again.",
}


class PairingError(AuthMeshError):
    """A pairing or bootstrap step failed; ``code`` is stable, ``str()`` is the user sentence."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code, message or MESSAGES.get(code, f"Pairing failed ({code}); {_RERUN}."))
