"""The operating system's confinement of every process that runs candidate code.

A confined process sees the whole filesystem read-only except the directories it is given (a
job directory, with its scratch inside), has no network (an empty network namespace), and can
neither run a program nor load a native library from anywhere but the system's and Python's own
directories. bubblewrap (`bwrap`) builds the namespaces and the read-only view; `seal`, the
first thing a confined process does, marks every other mount noexec from a nested user
namespace and then leaves that namespace, so nothing the process runs later can undo it.

SELFDISCO_CONFINE chooses what happens where confinement is unavailable (no bubblewrap, or user
namespaces refused): "auto" (the default) runs candidate code unconfined and says so, "require"
refuses to run it, "off" never confines (for debugging a confined failure).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from selfdisco.config import CONFINE_POLICIES
from selfdisco.errors import UserError

POLICY_ENV = "SELFDISCO_CONFINE"  # the policy; a run sets it from its config's `confine`
CONFINED_ENV = "SELFDISCO_CONFINED"  # set inside: the exec mounts, as a JSON list
ENABLE_HINT = ("install bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install "
               "bubblewrap) and allow unprivileged user namespaces (sysctl "
               "kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 and later also "
               "kernel.apparmor_restrict_unprivileged_userns=0)")
SYSTEM_EXEC_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
                    "/etc")
PROBE_TIMEOUT_S = 30.0

# Linux constants (the same on x86_64 and aarch64).
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
SYS_MOUNT_SETATTR = 442
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOEXEC = 0x2, 0x8
AT_FDCWD = -100


class ConfinementError(UserError):
    """Candidate code would run unconfined where SELFDISCO_CONFINE=require forbids it."""


@dataclass(frozen=True)
class Status:
    """Whether candidate code runs confined here, and if not, why and how to change that."""

    confined: bool
    policy: str
    tool: str | None = None  # "bubblewrap 0.8.0 (/usr/bin/bwrap)"
    reason: str | None = None  # why not confined
    hint: str | None = None  # how to enable it

    def describe(self) -> str:
        if self.confined:
            return (f"candidate code runs confined by {self.tool}: read-only filesystem but its "
                    "job directory, no network, no programs or libraries from writable places")
        return (f"candidate code runs UNCONFINED ({self.reason}); only the static check stands "
                f"between it and your files" + (f": to confine it, {self.hint}" if self.hint
                                                  else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def policy() -> str:
    value = os.environ.get(POLICY_ENV, "auto").strip().lower() or "auto"
    if value not in CONFINE_POLICIES:
        raise UserError(f"{POLICY_ENV}={value!r} is not a confinement policy; use one of "
                        f"{', '.join(CONFINE_POLICIES)}")
    return value


def status(chosen: str | None = None) -> Status:
    """This machine's confinement under policy `chosen` (default: SELFDISCO_CONFINE's); the
    machine is probed once per process."""
    chosen = chosen or policy()
    if chosen == "off":
        return Status(False, chosen, reason=f"{POLICY_ENV}=off")
    tool, reason = _probe()
    if tool is None:
        return Status(False, chosen, reason=reason, hint=ENABLE_HINT)
    return Status(True, chosen, tool=tool)


def require(chosen: str | None = None) -> Status:
    """The status; ConfinementError when the policy requires confinement and it is missing."""
    current = status(chosen)
    if not current.confined and current.policy == "require":
        raise ConfinementError(f"{POLICY_ENV}=require, but candidate code cannot be confined "
                               f"here: {current.reason}. To confine it, {current.hint}")
    return current


def command(argv: Sequence[str], *, writable: Sequence[str | Path],
            env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run `argv` confined, with `writable` (directories that
    exist) the only places it may write; the first of them holds its scratch (TMPDIR), and the
    environment leads to this package (with_package_path).

    Unconfined (policy off, or auto where confinement is unavailable) it is `argv` as given.
    The confined program must call `seal()` before it runs any candidate code.
    """
    env = with_package_path(dict(os.environ if env is None else env))
    writable = [str(Path(p).resolve()) for p in writable]
    scratch = Path(writable[0]) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    env.update(TMPDIR=str(scratch), TEMP=str(scratch), TMP=str(scratch))
    if not require().confined:
        env.pop(CONFINED_ENV, None)
        return list(argv), env
    exec_dirs = exec_mounts()
    env.update({CONFINED_ENV: json.dumps(exec_dirs), "XDG_CACHE_HOME": str(scratch / "cache"),
                "HF_HOME": _hf_home(env), "HF_DATASETS_CACHE": str(scratch / "datasets"),
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return [*_bwrap_args(_bwrap(), exec_dirs, writable), *argv], env


def with_package_path(env: dict[str, str]) -> dict[str, str]:
    """`env` with this package's parent first on PYTHONPATH: a process started with it imports
    this selfdisco, installed or not."""
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def exec_mounts() -> list[str]:
    """The directories a confined process may run programs and load libraries from: the
    system's and this Python's (its installation, virtual environment and site-packages)."""
    candidates = [*SYSTEM_EXEC_DIRS, sys.base_prefix, sys.base_exec_prefix, sys.prefix,
                  sys.exec_prefix, *(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))]
    found = sorted({str(Path(p).resolve()) for p in candidates if p and Path(p).is_dir()})
    return [p for p in found if p != "/" and not any(
        p.startswith(other.rstrip("/") + "/") for other in found if other != p)]


def _hf_home(env: dict[str, str]) -> str:
    if env.get("HF_HOME"):
        return env["HF_HOME"]
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "huggingface")


def _bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise ConfinementError("bwrap is not on PATH")
    return path


def _bwrap_args(bwrap: str, exec_dirs: list[str], writable: list[str]) -> list[str]:
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for directory in exec_dirs:
        args += ["--ro-bind", directory, directory]
    for device in _gpu_devices():
        args += ["--dev-bind", device, device]
    for directory in writable:
        args += ["--bind", directory, directory]
    return [*args, "--chdir", writable[0], "--"]


def _gpu_devices() -> list[str]:
    dev = Path("/dev")
    names = sorted(p.name for p in dev.glob("nvidia*")) if dev.is_dir() else []
    found = [str(dev / name) for name in names]
    if (dev / "dri").is_dir():
        found.append(str(dev / "dri"))
    return found


@functools.cache
def _probe() -> tuple[str | None, str | None]:
    """(tool, None) when a confined process can be started and sealed here, else (None, why)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed"
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout
    tool = f"{version.strip() or 'bubblewrap'} ({bwrap})"
    with tempfile.TemporaryDirectory(prefix="selfdisco-confine-") as work:
        exec_dirs = exec_mounts()
        env = with_package_path(dict(os.environ, **{CONFINED_ENV: json.dumps(exec_dirs)}))
        argv = [*_bwrap_args(bwrap, exec_dirs, [work]), sys.executable, "-c",
                "import sys; from selfdisco.losses.confine import probe_inside; "
                "print(probe_inside(sys.argv[1]))", work]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, f"bwrap could not start a confined process: {err}"
    if done.returncode == 0 and done.stdout.strip() == "confined":
        return tool, None
    lines = (done.stdout + done.stderr).strip().splitlines()
    why = lines[-1] if lines else f"exit status {done.returncode}"
    return None, f"bwrap could not confine a process here: {why[:300]}"


# --- inside the confined process -------------------------------------------------------------
def active() -> bool:
    """Whether this process was started confined (and so has sealed, or has stopped)."""
    return CONFINED_ENV in os.environ


def seal() -> None:
    """Make every mount but the exec directories noexec, and give up the power to change that.

    A no-op outside confinement. Must run before any thread starts (user namespaces cannot be
    entered by a multithreaded process), so call it first, before importing torch.
    """
    exec_dirs = os.environ.get(CONFINED_ENV)
    if exec_dirs is None:
        return
    keep = set(json.loads(exec_dirs))
    libc = ctypes.CDLL(None, use_errno=True)
    _enter_user_namespace(libc, CLONE_NEWUSER | CLONE_NEWNS)
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID, 0, 0, 0)
    for mount_point in _mount_points():
        if mount_point in keep:
            continue
        if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, mount_point.encode(), 0, attr,
                        ctypes.sizeof(attr)) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:  # not a mount point there: hidden under a later mount
                continue
            raise OSError(err, f"cannot mark {mount_point} noexec: {os.strerror(err)}")
    # A further user namespace holds no power over the mount namespace just sealed.
    _enter_user_namespace(libc, CLONE_NEWUSER)


def _enter_user_namespace(libc, flags: int) -> None:
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot enter a user namespace: {os.strerror(err)}")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1\n")
    Path("/proc/self/setgroups").write_text("deny\n")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1\n")


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].encode().decode("unicode_escape")  # \040 for a space, etc.
        if point not in points:
            points.append(point)
    return points


def probe_inside(workdir: str) -> str:
    """Seal, then try what a sealed process must not do: "confined", or what it could do."""
    seal()
    outside = Path(sys.executable).resolve().parent / ".selfdisco-confine-probe"
    try:
        outside.write_text("x")
        outside.unlink()
        return f"could write {outside}"
    except OSError:
        pass
    library = Path(workdir) / "probe.so"
    shutil.copyfile(_some_library(), library)
    try:
        ctypes.CDLL(str(library))
        return f"could load a library from {workdir}"
    except OSError:
        pass
    import socket  # lazy: only the probe needs it

    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        return f"sees network interfaces {', '.join(interfaces)}"
    return "confined"


def _some_library() -> str:
    import _ctypes  # lazy: only the probe needs it

    if getattr(_ctypes, "__file__", None):
        return _ctypes.__file__
    return next(str(p) for p in Path(sysconfig.get_paths()["platstdlib"], "lib-dynload").glob(
        "*.so"))

