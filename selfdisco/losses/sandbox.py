"""Run candidate code in a throw-away process with time, memory and file-size limits.

A sandbox server is a fresh Python process (started with subprocess, not forked from the
caller), confined by the operating system (losses/confine.py: read-only filesystem but its own
directory, no network, no programs or libraries from writable places), that imports torch once,
then forks one child per job. The server never runs candidate code itself, so every candidate
starts from the same clean state in about 20 ms instead of paying for `import torch`, and
nothing one candidate changes in memory reaches the next. Each child gets its own empty working
directory (HOME and TMPDIR point there too), an address-space limit, a CPU-time limit, no core
dumps and a zero file-size limit, and is killed at the wall-clock timeout. The caller only ever
sees a verdict: a crash, hang or memory bomb in a child becomes a one-line reason.

A job names an entry point (ENTRIES: the screening checks of each kind of loss; a caller may
give its own table, as the digits evaluation does) and its keyword arguments; the entry returns
a JSON-able dict. Run as `python -m selfdisco.losses.sandbox` it is the server; `Sandbox` is the
caller's side.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from selfdisco.losses import confine
from selfdisco.losses.kinds import KINDS

MAX_RESULT_BYTES = 1 << 20
# Entry name -> "module:function" the server imports at start and calls in a child per job:
# by default each kind of loss's screening checks, run_checks(code, beta).
ENTRIES = {name: f"{kind.checks_module}:run_checks" for name, kind in KINDS.items()}
ENTRIES_ENV = "SELFDISCO_SANDBOX_ENTRIES"
START_TIMEOUT_S = 180.0


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a verdict on any candidate)."""


# --- caller side ------------------------------------------------------------------------------
class Sandbox:
    """A warm sandbox server, started on first use; one job at a time (thread-safe).

    entries: the server's entry points, name -> "module:function" (default ENTRIES).
    warm: "module:function"s the server calls once, with no arguments, before it forks any
        child (loading data every child reads, say); never candidate code.
    """

    def __init__(self, entries: dict[str, str] | None = None, warm: list[str] = ()) -> None:
        self.entries = dict(ENTRIES if entries is None else entries)
        self.warm = list(warm)
        self._proc: subprocess.Popen | None = None
        self._root: Path | None = None
        self._buffer = b""
        self._ready = False
        self._lock = threading.Lock()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Launch the server without waiting for it to import torch."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._cleanup()
        self._root = Path(tempfile.mkdtemp(prefix="selfdisco-sandbox-"))
        env = dict(os.environ, HOME=str(self._root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONDONTWRITEBYTECODE="1",
                   **{ENTRIES_ENV: json.dumps({"entries": self.entries, "warm": self.warm})})
        argv, env = confine.command([sys.executable, "-m", "selfdisco.losses.sandbox"],
                                    writable=[self._root], env=env)
        with open(self._root / "server.log", "wb") as log:
            self._proc = subprocess.Popen(argv, cwd=self._root, env=env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log,
                                          start_new_session=True)
        self._buffer, self._ready = b"", False

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start if needed and block until the server has imported torch."""
        self.start()
        if self._ready:
            return
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None or not line.get("ready"):
            log = self._log_tail()
            self._cleanup()
            raise SandboxError(f"the screening sandbox did not start: {log or 'no output'}")
        self._ready = True

    def run(self, code: str, *, timeout_s: float, memory_mb: int, beta: float,
            checks: str = "preference") -> dict:
        """Screen `code` in a fresh child with the checks of kind `checks` (KINDS), its shape
        computed at `beta`; returns {"ok", "reason", "fingerprint", "shape", "seconds"}."""
        result = self.call(checks, {"code": code, "beta": beta}, timeout_s=timeout_s,
                           memory_mb=memory_mb)
        return {"ok": bool(result.get("ok")), "reason": result.get("reason"),
                "fingerprint": result.get("fingerprint"), "shape": result.get("shape"),
                "seconds": result.get("seconds")}

    def call(self, entry: str, args: dict, *, timeout_s: float, memory_mb: int) -> dict:
        """Call entry point `entry` with keyword `args` in a fresh child; returns its dict, or a
        verdict {"ok": False, "cause", "reason"} when the child timed out, died or failed."""
        if entry not in self.entries:
            raise ValueError(f"no sandbox entry {entry!r}; this sandbox has "
                             f"{', '.join(self.entries)}")
        with self._lock:
            for _attempt in range(2):
                self.wait_ready()
                result = self._exchange({"entry": entry, "args": args, "timeout_s": timeout_s,
                                         "memory_mb": memory_mb}, timeout_s + 30.0)
                if result is not None:
                    return result
                self._cleanup()  # the server died or hung: start a new one and try once more
            return {**_verdict("the sandbox failed twice on this job", "killed"),
                    "seconds": None}

    def close(self) -> None:
        with self._lock:
            self._cleanup()

    def _exchange(self, job: dict, wait_s: float) -> dict | None:
        try:
            self._proc.stdin.write(json.dumps(job).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            return None
        return self._read_line(time.monotonic() + wait_s)

    def _read_line(self, deadline: float) -> dict | None:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._buffer) > MAX_RESULT_BYTES * 2:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _log_tail(self) -> str:
        try:
            text = (self._root / "server.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def _cleanup(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc, self._ready, self._buffer = None, False, b""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


# --- server side ------------------------------------------------------------------------------
def serve() -> None:
    """Seal the confinement, import torch and the entry points once, then answer one JSON job
    per line on stdin with one line on stdout."""
    confine.seal()  # first: before any thread starts
    # lazy: loads torch
    import torch

    table = json.loads(os.environ.get(ENTRIES_ENV) or json.dumps({"entries": ENTRIES}))
    entries = {name: _function(target) for name, target in table["entries"].items()}
    for target in table.get("warm", []):  # imported and called here, before any child
        _function(target)()

    torch.set_num_threads(1)
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to the log, never into the protocol
    protocol_in = sys.stdin.buffer
    protocol_out.write(json.dumps({"ready": True, "pid": os.getpid()}).encode() + b"\n")
    protocol_out.flush()
    private_fds = (protocol_out.fileno(), protocol_in.fileno())
    try:
        for line in protocol_in:  # ends when the caller closes the pipe or dies
            try:
                job = json.loads(line)
            except ValueError:
                continue
            started = time.monotonic()
            result = run_job(job, entries, private_fds)
            result["seconds"] = round(time.monotonic() - started, 4)
            protocol_out.write(json.dumps(result).encode() + b"\n")
            protocol_out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        workdir = Path.cwd()
        if workdir.name.startswith("selfdisco-sandbox-"):  # the caller may not be there to
            shutil.rmtree(workdir, ignore_errors=True)  # remove it


def _function(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(job: dict, entries: dict, private_fds: tuple[int, ...] = ()) -> dict:
    """Fork a child for one job, enforce the wall-clock limit and read its result."""
    timeout_s = float(job.get("timeout_s", 5.0))
    workdir = tempfile.mkdtemp(prefix="candidate-", dir=os.getcwd())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        _child(job, entries, write_fd, workdir, private_fds)
    os.close(write_fd)
    try:
        data, why = _collect(read_fd, time.monotonic() + timeout_s)
    finally:
        os.close(read_fd)
    if why:
        _kill(pid)
    status = _reap(pid)
    shutil.rmtree(workdir, ignore_errors=True)
    if why == "timeout":
        return _verdict(f"timed out after {timeout_s:g} s (an endless or very slow loop?)",
                        "timeout")
    if why == "too_big":
        return _verdict("produced too much output")
    try:
        result = json.loads(data)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return _verdict(_death(status, timeout_s), "killed")
    return result


def _verdict(reason: str, cause: str = "error") -> dict:
    return {"ok": False, "cause": cause, "reason": reason}


def _collect(fd: int, deadline: float) -> tuple[bytes, str | None]:
    chunks, size = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"", "timeout"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), None
        size += len(chunk)
        if size > MAX_RESULT_BYTES:
            return b"", "too_big"
        chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    deadline = time.monotonic() + 5.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            _kill(pid)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.005)


def _death(status: int, timeout_s: float) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return f"used more than {timeout_s:g} s of CPU time (an endless loop?)"
        if sig == signal.SIGXFSZ:
            return "tried to write a file, which is not allowed"
        if sig == signal.SIGSEGV:
            return "crashed the process (segmentation fault)"
        if sig == signal.SIGKILL:
            return "was killed (out of memory?)"
        return f"crashed the process (signal {signal.Signals(sig).name})"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"ended the process (exit status {code}) without a verdict"


def _child(job: dict, entries: dict, write_fd: int, workdir: str,
           private_fds: tuple[int, ...]) -> None:
    try:
        for fd in private_fds:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        tempfile.tempdir = workdir
        _set_limits(float(job.get("timeout_s", 5.0)), int(job.get("memory_mb", 1024)))
        sys.setrecursionlimit(500)

        result = entries[job["entry"]](**job["args"])
    except BaseException as err:  # noqa: BLE001 - report, never fall back into the server loop
        result = _verdict(f"{job.get('entry')} failed: {type(err).__name__}: {err}"[:300])
    try:
        data = json.dumps(result).encode()
        while data:
            data = data[os.write(write_fd, data):]
    finally:
        os._exit(0)


def _set_limits(timeout_s: float, memory_mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    cpu = int(timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    address_space = _address_space_bytes()
    if address_space:
        limit = address_space + memory_mb * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


if __name__ == "__main__":
    serve()
