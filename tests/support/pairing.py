"""A watching controller for the pairing tests."""

from __future__ import annotations

import asyncio

from authmesh.core._keys import PrivateKey
from authmesh.pairing import BootstrapResult, provision
from authmesh.pairing._bootstrap import IssuedToken

WATCH_DEADLINE = 10.0


async def start_watching(
    controller_key: PrivateKey, issued: IssuedToken, **options: object
) -> tuple[asyncio.Task[BootstrapResult], list[BootstrapResult]]:
    """Start provision() and return once the relay confirmed the watch, with the list of
    targets it accepted (unless ``accept_target`` is given)."""
    ready = asyncio.Event()
    accepted: list[BootstrapResult] = []
    task = asyncio.create_task(
        provision(
            controller_key,
            issued,
            on_watching=ready.set,
            accept_target=options.pop("accept_target", accepted.append),
            **options,  # type: ignore[arg-type]
        )
    )
    await asyncio.wait_for(ready.wait(), WATCH_DEADLINE)
    return task, accepted
