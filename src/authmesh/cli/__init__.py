"""The ``amesh`` command (entry point ``authmesh.cli.main:main``, or ``python -m authmesh.cli``).

Meant to be used by programs that run ``amesh``: :class:`ExitCode`, what each exit status
means, and :func:`exit_code_for`, the status an :class:`~authmesh.errors.AuthMeshError` code
ends in (documented in docs/cli.md). The modules named ``_*.py`` hold the commands and are
internal.
"""

from authmesh.cli._exit_codes import ExitCode, exit_code_for

__all__ = ["ExitCode", "exit_code_for"]
