"""Confinement: the policy, the probe, and screening that the operating system confines.

The screening tests run hostile candidates in a sandbox whose static check is bypassed
(confine_helpers.unchecked_env): each must fail to touch a file outside its directory, reach a
server on the host's loopback, or load a library, while a harmless write in its own directory
goes through (so the bypass is real and the code did run).
"""

from __future__ import annotations

import pytest
from confine_helpers import (
    OWN_DIRECTORY,
    Target,
    hostile_code,
    require_confinement,
    unchecked_env,
)

from selfdisco.errors import UserError
from selfdisco.losses import confine
from selfdisco.losses.sandbox import Sandbox


@pytest.fixture
def target(tmp_path):
    target = Target(tmp_path)
    yield target
    target.close()


def test_a_bad_policy_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(confine.POLICY_ENV, "sometimes")
    with pytest.raises(UserError, match="auto, require, off"):
        confine.status()


def test_off_never_confines_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv(confine.POLICY_ENV, "off")
    status = confine.status()
    assert not status.confined and "SELFDISCO_CONFINE=off" in status.reason
    argv, env = confine.command(["python", "-c", "pass"], writable=[tmp_path])
    assert argv == ["python", "-c", "pass"] and confine.CONFINED_ENV not in env
    assert "UNCONFINED" in status.describe()


def test_without_bubblewrap_auto_runs_unconfined_and_require_refuses(monkeypatch, tmp_path):
    confine._probe.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    try:
        status = confine.status("auto")
        assert not status.confined and "not installed" in status.reason
        assert "apt install bubblewrap" in status.hint
        with pytest.raises(confine.ConfinementError, match="SELFDISCO_CONFINE=require"):
            confine.require("require")
        monkeypatch.setenv(confine.POLICY_ENV, "require")
        with pytest.raises(confine.ConfinementError):
            confine.command(["python"], writable=[tmp_path])
    finally:
        confine._probe.cache_clear()


def test_the_probe_confines_this_machine():
    """CI runs as root with bubblewrap installed by scripts/setup.sh: confinement must work."""
    require_confinement()
    status = confine.status("require")
    assert status.confined and "bubblewrap" in status.tool


@pytest.fixture
def hostile_sandbox(tmp_path, monkeypatch):
    require_confinement()
    env = unchecked_env(tmp_path / "bypass")
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    box = Sandbox()
    yield box
    box.close()


def test_the_bypass_runs_candidate_code_that_writes_its_own_directory(hostile_sandbox):
    result = hostile_sandbox.run(hostile_code(OWN_DIRECTORY),
                                 timeout_s=20, memory_mb=1024, beta=0.1)
    assert "DONE" in result["reason"], result


@pytest.mark.parametrize("name", ["truncate", "overwrite", "network", "library_outside",
                                  "library_written"])
def test_screening_confines_a_candidate_past_the_static_check(hostile_sandbox, target, name):
    result = hostile_sandbox.run(hostile_code(target.acts[name]), timeout_s=20, memory_mb=1024,
                                 beta=0.1)
    assert not result["ok"]
    assert "REFUSED" in result["reason"] and "NameError" not in result["reason"], result
    target.assert_untouched()


def test_screening_runs_confined(monkeypatch):
    """The default sandbox server runs under bubblewrap (its process is bwrap's)."""
    require_confinement()
    box = Sandbox()
    try:
        box.wait_ready()
        command = open(f"/proc/{box.pid}/cmdline", "rb").read().split(b"\0")
        assert command[0].endswith(b"bwrap") and b"--unshare-all" in command
    finally:
        box.close()
