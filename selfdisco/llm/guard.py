"""Keeps a vLLM server from outliving selfdisco: `python -m selfdisco.llm.guard PARENT -- CMD...`.

The guard leads the server's process group. It runs CMD and ends the whole group when CMD exits
(a crash leaves no engine or worker processes behind), when it is asked to stop (SIGTERM, SIGINT,
SIGHUP), or when its parent PARENT goes away, even by SIGKILL, which no handler in the parent
could catch. It imports only the standard library and psutil, so it starts in a blink.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from selfdisco.llm.procs import group_members, signal_group

GRACE_S = 10.0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m selfdisco.llm.guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent = int(argv[0])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    child = subprocess.Popen(argv[2:])
    while child.poll() is None and not stop.is_set() and os.getppid() == parent:
        stop.wait(0.5)
    pgid = os.getpgid(0)
    if not stop.is_set():
        signal_group(pgid, signal.SIGTERM)  # a signal from outside already reached the group
    deadline = time.monotonic() + GRACE_S
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(pgid):
        signal_group(pgid, signal.SIGKILL)  # ends this process too
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
