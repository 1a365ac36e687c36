"""Calling the caller's UI hooks, which may be plain functions or coroutines."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["call_hook"]

T = TypeVar("T")


async def call_hook(hook: Callable[..., T | Awaitable[T]] | None, *args: Any) -> T | None:
    """Call ``hook(*args)``, awaiting the result if it is awaitable; None when no hook."""
    if hook is None:
        return None
    result = hook(*args)
    if inspect.isawaitable(result):
        return await result
    return result
