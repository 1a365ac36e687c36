"""The exit-status table of ``amesh``: the one place where error codes become exit statuses.

Every failure is an :class:`~authmesh.errors.AuthMeshError` with a stable ``code``; this module
maps that code to the status a script sees. Documented in docs/cli.md (keep the two in step).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(IntEnum):
    """What an ``amesh`` exit status means."""

    OK = 0
    FAILED = 1  # the operation failed (no identity, unknown device, tampered file, ...)
    USAGE = 2  # the command line is wrong; nothing was attempted
    REFUSED = 3  # the peer refused, or a signature or verification code did not match
    TIMED_OUT = 4  # a wait timed out, or a code, token or session expired
    RELAY = 5  # the relay could not be reached, is unavailable, or rate limits us
    INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)
    # `amesh shell` only: the session started, then was lost, so the remote status is unknown
    # (ssh's convention; a completed session exits with the remote command's own status).
    SESSION_LOST = 255


_CODES: dict[ExitCode, frozenset[str]] = {
    ExitCode.USAGE: frozenset(
        {
            "usage",
            "invalid_argument",
            "invalid_code",
            "invalid_v3_code",
            "short_code",
            "invalid_name",
            "invalid_ttl",
            "ttl_too_long",
            "invalid_token_format",
            "invalid_token_type",
            "unsupported_token_version",
            "unsupported_token_alg",
            "unsupported_token_scope",
            "token_must_be_single_use",
            "token_lifetime_too_long",
            "token_missing_controller_pubkey",
            "backend_unsupported",
            "confirmation_needed",
        }
    ),
    ExitCode.REFUSED: frozenset(
        {
            "refused",
            "rotation_refused",
            "sas_mismatch",
            "peer_rejected",
            "operator_declined",
            "commitment_mismatch",
            "decrypt_failed",
            "bad_peer_key",
            "bad_peer_signature",
            "own_key",
            "bootstrap_rejected",
            "token_already_used",
            "invalid_signature",
            "invalid_controller_signature",
            "controller_pubkey_mismatch",
            "invalid_target_signature",
            "issuer_mismatch",
            "target_proof_required",
            "wrong_token",
            "peer_is_legacy",
            "peer_is_v2",
            "peer_not_v2",
            "peer_requires_v2",
            "peer_declined",
            "peer_name_too_long",
            "code_mismatch",
            "role_mismatch",
            "handshake_failed",
            "not_confirmed",
        }
    ),
    ExitCode.TIMED_OUT: frozenset(
        {
            "timeout",
            "no_answer",
            "session_expired",
            "code_expired",
            "no_confirmation",
            "bootstrap_timeout",
            "provision_expired",
            "token_expired",
            "token_not_yet_valid",
        }
    ),
    ExitCode.RELAY: frozenset(
        {
            "relay_unreachable",
            "relay_unavailable",
            "relay_refused",  # `shell`: the relay answered the request with an error
            "relay_ended",  # `shell`: the relay ended the session before it started
            "relay_closed",
            "relay_capacity",
            "relay_overloaded",
            "relay_without_v2",
            "rate_limited",
        }
    ),
    ExitCode.INTERRUPTED: frozenset({"interrupted"}),
    ExitCode.SESSION_LOST: frozenset({"connection_lost", "integrity"}),
}
_BY_CODE = {code: status for status, codes in _CODES.items() for code in codes}


def exit_code_for(code: str) -> ExitCode:
    """The exit status for an error ``code``; anything not listed is a failed operation (1)."""
    return _BY_CODE.get(code, ExitCode.FAILED)
