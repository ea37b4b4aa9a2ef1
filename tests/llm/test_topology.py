"""Server topology: which server answers each role (sleep and wake-up: test_sleep_wake.py)."""

from __future__ import annotations

import pytest

from selfdisco.config import load_config
from selfdisco.llm.topology import ServerPlan, plan_servers


@pytest.mark.parametrize(("overrides", "needs_judge", "plan"), [
    ({}, False, ServerPlan("managed", "policy", "")),
    ({}, True, ServerPlan("managed", "policy", "policy")),
    ({"server": {"url": "http://10.0.0.2:8000"}}, False, ServerPlan("attached", "policy", "")),
    ({"server": {"proposer": "http://10.0.0.3:8000/v1"}}, False,
     ServerPlan("managed", "attached", "")),
    ({"models": {"proposer": "other"}}, False, ServerPlan("managed", "managed", "")),
    ({"models": {"proposer": "other"}}, True, ServerPlan("managed", "managed", "proposer")),
    ({"models": {"judge": "judge"}}, True, ServerPlan("managed", "policy", "managed")),
    ({"models": {"judge": "judge"}}, False, ServerPlan("managed", "policy", "")),
    ({"server": {"proposer": "replay:checkpoints/old"}}, True, ServerPlan("", "replay", "")),
])
def test_plan_servers(overrides, needs_judge, plan):
    assert plan_servers(load_config("smoke", overrides=overrides), needs_judge) == plan
