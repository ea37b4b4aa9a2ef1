"""Server topology: which server answers each role (sleep and wake-up: test_sleep_wake.py)."""

from __future__ import annotations

import pytest

from selfdisco.config import load_config
from selfdisco.llm.topology import ServerRoles, server_roles


@pytest.mark.parametrize(("overrides", "needs_judge", "plan"), [
    ({}, False, ServerRoles("managed", "policy", "")),
    ({}, True, ServerRoles("managed", "policy", "policy")),
    ({"server": {"url": "http://10.0.0.2:8000"}}, False, ServerRoles("attached", "policy", "")),
    ({"server": {"proposer_source": "http://10.0.0.3:8000/v1"}}, False,
     ServerRoles("managed", "attached", "")),
    ({"models": {"proposer": "other"}}, False, ServerRoles("managed", "managed", "")),
    ({"models": {"proposer": "other"}}, True, ServerRoles("managed", "managed", "proposer")),
    ({"models": {"judge": "judge"}}, True, ServerRoles("managed", "policy", "managed")),
    ({"models": {"judge": "judge"}}, False, ServerRoles("managed", "policy", "")),
    ({"server": {"proposer_source": "replay:checkpoints/old"}}, True,
     ServerRoles("", "replay", "")),
])
def test_plan_servers(overrides, needs_judge, plan):
    assert server_roles(load_config("smoke", overrides=overrides), needs_judge) == plan
