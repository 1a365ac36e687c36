"""Pairing two machines through a relay, and provisioning one from a bootstrap token.

* :func:`listen` / :func:`invite` — interactive pairing, configured by :class:`ListenOptions`
  / :class:`InviteOptions` (pairing v3 by default: one :class:`PairingCode`, a PAKE; ``protocol=2``
  or ``protocol=1`` for the reference's exchange), returning a :class:`PairingResult`.
* :func:`provision` / :func:`bootstrap` — token-based provisioning (controller / target),
  returning a :class:`BootstrapResult`.

Every failure is a :class:`PairingError` with a stable ``code`` and a one-sentence message.
Nothing here touches the allow list or identity files: callers record the results.
Meant to be used: the names in ``__all__``. The modules named ``_*.py`` are internal: their
names may change without notice.
"""

from __future__ import annotations

from authmesh.pairing._bootstrap import (
    BootstrapResult,
    IssuedToken,
    bootstrap,
    check_token,
    issue_token,
    provision,
)
from authmesh.pairing._code import PairingCode
from authmesh.pairing._errors import MAX_FRIENDLY_NAME_CHARS, PairingError
from authmesh.pairing._identity import PairingResult, PeerIdentity
from authmesh.pairing._interactive import InviteOptions, ListenOptions, invite, listen

__all__ = [
    "MAX_FRIENDLY_NAME_CHARS",
    "BootstrapResult",
    "InviteOptions",
    "IssuedToken",
    "ListenOptions",
    "PairingCode",
    "PairingError",
    "PairingResult",
    "PeerIdentity",
    "bootstrap",
    "check_token",
    "invite",
    "issue_token",
    "listen",
    "provision",
]
