"""The remote shell (opt-in extra ``authmesh[shell]``): the asyncio agent and controller.

Meant to be used:

* :class:`Agent` with an :class:`AgentConfig` — ``amesh agent start``: relay registration,
  session admission, reliable teardown;
* :func:`run_shell` with a :class:`ShellRequest` — ``amesh shell``: the local terminal side;
* :class:`ShellError` — what either side raises for a failure a user can fix.

Both are thin ``asyncio.TaskGroup`` drivers around the sans-I/O session objects of
:mod:`authmesh.core.shell`; see ``docs/shell.md``. The modules named ``_*.py`` are internal:
their names may change without notice.
"""

from authmesh.shell._agent import Agent, AgentConfig
from authmesh.shell._controller import ShellRequest, run_shell
from authmesh.shell._errors import ShellError

__all__ = ["Agent", "AgentConfig", "ShellError", "ShellRequest", "run_shell"]
