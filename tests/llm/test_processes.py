"""No orphans: the guard and process-group ending, with plain processes instead of vLLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from selfdisco.llm.procs import end_group, group_members

# A command whose process leaves a grandchild behind in its group, then waits until the test
# creates its release file (never, unless the test wants the command to exit).
SPAWNS_GRANDCHILD = ("import os, subprocess, time\nsubprocess.Popen(['sleep', '300'])\n"
                     "while not os.path.exists({release!r}):\n    time.sleep(0.05)\n")

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


def start_parent(release: Path) -> tuple[subprocess.Popen, int]:
    command = SPAWNS_GRANDCHILD.format(release=str(release))
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(command=command)],
                              stdout=subprocess.PIPE, text=True)
    guard_pid = int(parent.stdout.readline())
    assert wait_until(lambda: len(group_members(guard_pid)) >= 3), group_members(guard_pid)
    return parent, guard_pid


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_guard_ends_the_group_when_its_parent_is_killed(tmp_path):
    parent, guard_pid = start_parent(tmp_path / "never")
    members = group_members(guard_pid)
    assert {p.name() for p in members} >= {"sleep"}
    parent.kill()  # SIGKILL: no handler in the parent runs
    parent.wait()
    assert wait_until(lambda: not group_members(guard_pid)), group_members(guard_pid)
    assert not [p for p in members if alive(p)]


def test_guard_ends_the_group_when_its_command_exits(tmp_path):
    parent, guard_pid = start_parent(tmp_path / "release")
    try:
        members = group_members(guard_pid)  # guard, command and the command's sleep
        (tmp_path / "release").touch()  # the command exits; its sleep would live on
        assert wait_until(lambda: not group_members(guard_pid)), group_members(guard_pid)
        assert not [p for p in members if alive(p)]
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


def test_group_members_excludes_other_groups_and_zombies():
    own_group = os.getpgid(0)
    same = subprocess.Popen(["sleep", "300"])  # stays in this process's group
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    exited = subprocess.Popen(["true"])  # left unreaped: a zombie in this group
    try:
        assert wait_until(lambda: psutil.Process(exited.pid).status() == psutil.STATUS_ZOMBIE)
        members = {p.pid for p in group_members(own_group)}
        assert same.pid in members
        assert other.pid not in members and exited.pid not in members
        assert os.getpid() not in members
        assert os.getpid() in {p.pid for p in group_members(own_group, exclude_self=False)}
        assert {p.pid for p in group_members(other.pid)} == {other.pid}
    finally:
        for child in (same, other, exited):
            child.kill()
            child.wait()
