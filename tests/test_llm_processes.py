"""No orphans: the guard and process-group ending, with plain processes instead of vLLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from selfdisco.llm.procs import end_group, group_members

# A command whose process leaves a grandchild behind in its group.
SPAWNS_GRANDCHILD = ("import subprocess, time; subprocess.Popen(['sleep', '300']); "
                     "time.sleep({linger})")

# A parent that starts the guard the way VLLMServer does, prints the guard's pid and waits.
PARENT = """
import os, subprocess, sys, time
guard = subprocess.Popen([sys.executable, "-m", "selfdisco.llm.guard", str(os.getpid()), "--",
                          sys.executable, "-c", {command!r}], start_new_session=True)
print(guard.pid, flush=True)
time.sleep(300)
"""


def wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def start_parent(linger: float) -> tuple[subprocess.Popen, int]:
    command = SPAWNS_GRANDCHILD.format(linger=linger)
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(command=command)],
                              stdout=subprocess.PIPE, text=True)
    guard_pid = int(parent.stdout.readline())
    assert wait_until(lambda: len(group_members(guard_pid)) >= 3), group_members(guard_pid)
    return parent, guard_pid


def test_guard_ends_the_group_when_its_parent_is_killed():
    parent, guard_pid = start_parent(linger=300)
    members = group_members(guard_pid)
    assert {p.name() for p in members} >= {"sleep"}
    parent.kill()  # SIGKILL: no handler in the parent runs
    parent.wait()
    assert wait_until(lambda: not group_members(guard_pid)), group_members(guard_pid)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)


def test_guard_ends_the_group_when_its_command_exits():
    parent, guard_pid = start_parent(linger=2)
    try:
        assert wait_until(lambda: not group_members(guard_pid)), group_members(guard_pid)
    finally:
        parent.kill()
        parent.wait()


def test_end_group_kills_what_ignores_sigterm():
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert stubborn.stdout.readline().strip() == "ready"
    end_group(stubborn.pid, grace_s=1.0)
    assert stubborn.wait(timeout=10) == -signal.SIGKILL
    assert not group_members(stubborn.pid)


def test_group_members_excludes_other_groups():
    assert all(os.getpgid(p.pid) == os.getpgid(0) for p in group_members(os.getpgid(0)))
