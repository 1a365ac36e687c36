"""Bad handshake and session frames against a real protocol-2 agent through a real relay.

The agent must end each such session and stay up, and the granted controller must still get
its shell afterwards. ``bench/hostile_inputs.py`` repeats the campaign for more rounds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.agent_campaign import run_agent_campaign
from tests.hostile.agent_setup import AgentUnderAttack, agent_under_attack
from tests.support.shell import run_shell


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentUnderAttack]:
    with agent_under_attack(tmp_path_factory.mktemp("hostile-agent")) as setup:
        yield setup


async def test_agent_ends_every_bad_session_and_still_serves_its_controller(
    attacked: AgentUnderAttack,
) -> None:
    tally = await run_agent_campaign(attacked.target)
    assert tally.failures == []
    assert attacked.agent.process.poll() is None, attacked.agent.log()[-2000:]
    assert "failed unexpectedly" not in attacked.agent.log()
    assert "Traceback" not in attacked.agent.log()


def test_granted_controller_still_gets_a_shell_after_the_campaign(
    attacked: AgentUnderAttack,
) -> None:
    result = run_shell(
        attacked.controller_home,
        attacked.relay,
        attacked.scratch,
        "-c",
        "echo still-granted",
        target=attacked.target.target_name,
    )
    assert (result.returncode, result.stdout) == (0, "still-granted\n"), result.stderr
