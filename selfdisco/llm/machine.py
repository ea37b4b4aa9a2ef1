"""The machine a plan is made for: its GPUs and their memory, detected or described."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import psutil

from selfdisco.errors import UserError
from selfdisco.llm.sizes import GIB


@dataclass(frozen=True)
class Machine:
    """GPUs (each one's memory in GiB; none on a CPU machine), memory, and the names
    CUDA_VISIBLE_DEVICES gives the GPUs."""

    gpu_gib: tuple[float, ...]
    memory_gib: float
    device_ids: tuple[str, ...] = ()
    described: bool = False

    @property
    def gpus(self) -> int:
        return len(self.gpu_gib)

    def label(self) -> str:
        how = "described" if self.described else "this machine"
        if not self.gpus:
            return f"CPU, {self.memory_gib:.0f} GiB memory ({how})"
        sizes = sorted(set(self.gpu_gib))
        each = " / ".join(f"{g:.0f}" for g in sizes)
        return f"{self.gpus} x {each} GiB GPU ({how})"


def parse_machine(text: str) -> Machine:
    """"8x80GB", "80GB" (one GPU), "cpu" or "cpu:64GB"; GB are read as GiB (a GPU sold as
    80 GB reports 80 GiB)."""
    value = text.strip().lower().replace(" ", "")
    cpu = re.fullmatch(r"cpu(?::(\d+(?:\.\d+)?)gi?b?)?", value)
    if cpu:
        memory = float(cpu.group(1)) if cpu.group(1) else _memory_gib()
        return Machine((), memory, described=True)
    gpu = re.fullmatch(r"(?:(\d+)[x*])?(\d+(?:\.\d+)?)gi?b?", value)
    if not gpu or int(gpu.group(1) or 1) < 1 or float(gpu.group(2)) <= 0:
        raise UserError(f"--machine {text!r} is not understood; write GPUSxMEMORY, e.g. 8x80GB, "
                        "or cpu, or cpu:64GB")
    count = int(gpu.group(1) or 1)
    return described_gpus(count, float(gpu.group(2)))


def described_gpus(count: int, gib: float) -> Machine:
    """A machine of `count` GPUs of `gib` GiB each."""
    if count < 0 or (count and gib <= 0):
        raise UserError(f"a machine of {count} GPUs of {gib} GiB is not possible: give at least "
                        "one GPU and its memory (--gpus N --gpu-memory-gib G)")
    return Machine((float(gib),) * count, _memory_gib(), tuple(map(str, range(count))), True)


def _memory_gib() -> float:
    return psutil.virtual_memory().total / GIB


def detect_machine(backend: str) -> Machine:
    """This machine: its GPUs (nvidia-smi, those CUDA_VISIBLE_DEVICES lets through) when the
    vLLM back-end is "cuda", else a CPU machine."""
    if backend != "cuda":
        return Machine((), _memory_gib())
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"vLLM is the CUDA build but nvidia-smi does not list the GPUs ({err}); "
                        "check the driver with `selfdisco doctor`, or describe the machine "
                        "with --machine") from None
    gpus = {}
    for line in out.strip().splitlines():
        index, mib = (part.strip() for part in line.split(","))
        gpus[index] = float(mib) / 1024
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = list(gpus) if visible is None else [d.strip() for d in visible.split(",")]
    ids = [d for d in ids if d in gpus]  # (GPU UUIDs are not matched: name them by index)
    return Machine(tuple(gpus[d] for d in ids), _memory_gib(), tuple(ids))
