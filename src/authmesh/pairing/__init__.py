"""Pairing two machines through a relay, and provisioning one from a bootstrap token.

* :func:`listen` / :func:`invite` — interactive pairing (v2 by default, ``legacy=True`` for
  the reference's v1), returning a :class:`PairingResult`.
* :func:`provision` / :func:`bootstrap` — token-based provisioning (controller / target),
  returning a :class:`BootstrapResult`.

Every failure is a :class:`PairingError` with a stable ``code`` and a one-sentence message.
Nothing here touches the allow list or identity files: callers record the results.
"""

from __future__ import annotations

from authmesh.pairing.bootstrap import (
    BootstrapResult,
    IssuedToken,
    bootstrap,
    check_token,
    issue_token,
    provision,
)
from authmesh.pairing.errors import PairingError
from authmesh.pairing.identity import PairingResult, PeerIdentity
from authmesh.pairing.interactive import invite, listen

__all__ = [
    "BootstrapResult",
    "IssuedToken",
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
