"""Optional dependencies: a module of the SDK that needs an extra says which one."""

from __future__ import annotations

__all__ = ["MissingExtraError", "missing_extra"]


class MissingExtraError(ModuleNotFoundError):
    """A package an SDK module needs is not installed; the message names the extra."""


def missing_extra(error: ModuleNotFoundError, extra: str, feature: str) -> MissingExtraError:
    """The error to raise instead of ``error`` when importing ``feature``'s dependencies."""
    return MissingExtraError(
        f"{feature} needs the {error.name} package, which is not installed; "
        f"install it with: pip install 'authmesh[{extra}]'",
        name=error.name,
    )
