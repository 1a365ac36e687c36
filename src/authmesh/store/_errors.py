"""The one exception type the store raises; its message is the user-facing sentence."""

from __future__ import annotations

from authmesh.errors import AuthMeshError

__all__ = ["StoreError"]


class StoreError(AuthMeshError):
    """A store operation failed.

    ``str(error)`` is one sentence naming the problem and the fix, fit to show a user
    as is. ``code`` is a stable identifier for programs (the CLI maps some codes to the
    reference's exact wording):

    ``no_identity``, ``identity_exists``, ``identity_invalid``, ``no_passphrase``,
    ``passphrase_unreadable``, ``key_missing``, ``key_invalid``, ``wrong_passphrase``,
    ``key_mismatch``, ``backend_unavailable``, ``backend_unsupported``, ``tpm_failed``,
    ``allow_list_tampered``, ``device_exists``, ``device_not_found``, ``invalid_argument``,
    ``io_error``, ``busy``.
    """
