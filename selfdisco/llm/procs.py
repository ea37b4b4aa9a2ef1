"""Process groups: find every process of a group and end them all, politely then firmly."""

from __future__ import annotations

import os
import signal
import time

import psutil


def group_members(pgid: int, *, exclude_self: bool = True) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is pgid."""
    members = []
    for proc in psutil.process_iter(["status"]):
        if exclude_self and proc.pid == os.getpid():
            continue
        try:
            if os.getpgid(proc.pid) != pgid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, psutil.Error):
            continue
        members.append(proc)
    return members


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_group(pgid: int, *, grace_s: float = 10.0, extra: list[psutil.Process] = ()) -> None:
    """SIGTERM the group (and any extra processes), wait up to grace_s, then SIGKILL the rest.

    extra covers children that left the group (a library that calls setsid); they are signalled
    one by one.
    """
    signal_group(pgid, signal.SIGTERM)
    for proc in extra:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_members(pgid) and not any(_alive(p) for p in extra):
            return
        time.sleep(0.2)
    signal_group(pgid, signal.SIGKILL)
    for proc in extra:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (group_members(pgid) or any(_alive(p) for p in extra)):
        time.sleep(0.1)


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
