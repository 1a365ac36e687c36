"""On-disk state shared with the reference: the amesh home, identity, allow list, keystores.

Typical use::

    from authmesh.store import load_context, StoreError

    context = load_context()                 # identity + keystore, key unlocked once
    signature = context.signer.sign(message)
    entry = context.allow_list.find_by_public_key(header_id)

Every failure is a :class:`StoreError`; ``str(error)`` is the sentence to show. Meant to be
used: the names in ``__all__`` — :func:`load_context` / :func:`create_identity` and the
:class:`Context` they return, :class:`AmeshHome`, :class:`Identity`, :class:`AllowListStore`,
the keystore backends (:data:`BACKENDS`, :class:`Signer`). The modules named ``_*.py`` are
internal: their names may change without notice.
"""

from __future__ import annotations

from authmesh.store._allowlist_store import AllowListStore, now_timestamp
from authmesh.store._context import Context, InitResult, create_identity, load_context
from authmesh.store._errors import StoreError
from authmesh.store._home import AmeshHome
from authmesh.store._identity import Identity
from authmesh.store._keystore import BACKEND_LABELS, BACKENDS, Signer, backend_label

__all__ = [
    "BACKENDS",
    "BACKEND_LABELS",
    "AllowListStore",
    "AmeshHome",
    "Context",
    "Identity",
    "InitResult",
    "Signer",
    "StoreError",
    "backend_label",
    "create_identity",
    "load_context",
    "now_timestamp",
]
