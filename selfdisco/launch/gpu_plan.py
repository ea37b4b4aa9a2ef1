"""The plan on GPUs (selfdisco.launch.plan): each managed server's devices, tensor-parallel size
and memory share, the training jobs' devices, and the check of every GPU while candidates are
scored and while they train. The estimates and their constants are plan.py's."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from selfdisco.launch.plan import (
    ASLEEP_GIB,
    KV_SEQUENCES,
    SERVER_OVERHEAD_GIB,
    USABLE,
    Load,
    Plan,
    ServerSlot,
    Training,
    gib_parts,
)

if TYPE_CHECKING:
    from selfdisco.config import RunConfig


def place_on_gpus(plan: Plan, config: RunConfig) -> None:
    """Devices, tensor-parallel sizes and shares, then the check; servers are sized for
    KV_SEQUENCES sequences first, for one when that does not fit."""
    machine, servers, t = plan.machine, plan.servers, plan.training
    smallest = min(machine.gpu_gib)
    for slot in servers:
        if slot.size is not None:
            slot.tensor_parallel_size = _tensor_parallel(slot, config.server.max_model_len,
                                                         machine.gpus, smallest, plan.problems)
    if plan.problems:
        return
    _assign_devices(plan, config)
    for slot in servers:
        slot.sleeps = (slot.name == "policy" and not t.on_cpu
                       and bool(set(slot.devices) & set(t.devices)))
    for sequences in (KV_SEQUENCES, 1):
        plan.problems.clear()
        plan.loads.clear()
        _shares(plan, config.server.max_model_len, sequences)
        _check_gpus(plan)
        if plan.fits:
            break
    if plan.fits and plan.checked:
        _spread_room(plan)


def _spread_room(plan: Plan) -> None:
    """Give servers that share a GPU what is left of it, in equal parts (more KV cache)."""
    room = {}
    for g, load in enumerate(plan.loads):
        peak = max(load.scoring_gib, load.training_gib or 0.0)
        users = [s for s in plan.servers if g in s.devices]
        room[g] = (load.usable_gib - peak) / len(users) if users else 0.0
    for slot in plan.servers:
        if slot.gpu_memory_utilization < USABLE:
            extra = min(room[g] / plan.machine.gpu_gib[g] for g in slot.devices)
            slot.gpu_memory_utilization = round(
                slot.gpu_memory_utilization + math.floor(extra * 1000) / 1000, 3)
    plan.loads.clear()
    _check_gpus(plan)


def _tensor_parallel(slot: ServerSlot, max_model_len: int, gpus: int, gib: float,
                     problems: list[str]) -> int:
    """The fewest GPUs (a power of two dividing the attention heads) the server fits on."""
    kv = slot.size.kv_bytes(slot.dtype, max_model_len)
    tp = 1
    while tp <= gpus:
        slot.memory_gib = slot.size.server_gib(slot.dtype, kv, tp, SERVER_OVERHEAD_GIB)
        if slot.size.heads % tp == 0 and sum(slot.memory_gib.values()) <= USABLE * gib:
            return tp
        tp *= 2
    slot.memory_gib = slot.size.server_gib(slot.dtype, kv, 1, SERVER_OVERHEAD_GIB)
    problems.append(f"the {slot.name} server ({slot.model}) needs {gib_parts(slot.memory_gib)} "
                    f"for its weights and one sequence of {max_model_len} tokens, more than "
                    f"{USABLE:.0%} of a {gib:.0f} GiB GPU ({USABLE * gib:.1f} GiB), and no "
                    f"tensor-parallel split over the {gpus} GPU(s) brings it under that")
    return 1


def _assign_devices(plan: Plan, config: RunConfig) -> None:
    """Servers on GPUs of their own and training on the next ones when there are enough;
    else servers spread by load, training on the policy server's GPU."""
    n, servers, t = plan.machine.gpus, plan.servers, plan.training
    trains_here = t.where == "gpu"
    ray = config.executor == "ray"
    if sum(s.tensor_parallel_size for s in servers) + trains_here <= n:
        cursor = 0
        for slot in servers:
            slot.devices = tuple(range(cursor, cursor + slot.tensor_parallel_size))
            cursor += slot.tensor_parallel_size
        if trains_here:
            t.devices = tuple(range(cursor, n)) if ray else (cursor,)
        return
    load = [0.0] * n
    for slot in sorted(servers, key=lambda s: -_weight_gib(s)):
        chosen = sorted(range(n), key=lambda g: (load[g], g))[:slot.tensor_parallel_size]
        slot.devices = tuple(sorted(chosen))
        for g in chosen:
            load[g] += _weight_gib(slot) / slot.tensor_parallel_size + 1
    if trains_here:
        policy = plan.server("policy")
        first = policy.devices if policy else (min(range(n), key=lambda g: (load[g], g)),)
        free = tuple(g for g in range(n) if not load[g] and g not in first)
        t.devices = first + free if ray else first[:1]


def _weight_gib(slot: ServerSlot) -> float:
    return slot.size.server_gib(slot.dtype, 0, 1, 0)["weights"] if slot.size else 0.0


def _jobs_on(t: Training, device: int) -> int:
    """Jobs at once on a GPU: the local executor's all on its one; Ray's spread evenly."""
    if device not in t.devices:
        return 0
    k = t.devices.index(device)
    return t.jobs // len(t.devices) + (1 if k < t.jobs % len(t.devices) else 0)


def _shares(plan: Plan, max_model_len: int, sequences: int) -> None:
    """Each server's memory estimate and share: vLLM's usual share when it is alone on its
    GPUs, else what it needs (an equal split when its size is unknown)."""
    for slot in plan.servers:
        others = [s for s in plan.servers if s is not slot and set(s.devices) & set(slot.devices)]
        trains_here = bool(set(slot.devices) & set(plan.training.devices))
        alone = not others and not trains_here
        gib = min(plan.machine.gpu_gib[d] for d in slot.devices)
        if slot.size is None:
            slot.gpu_memory_utilization = round(USABLE / (len(others) + 1 + trains_here), 3)
            continue
        kv = slot.size.kv_bytes(slot.dtype, max_model_len * sequences)
        slot.memory_gib = slot.size.server_gib(slot.dtype, kv, slot.tensor_parallel_size,
                                               SERVER_OVERHEAD_GIB)
        need = sum(slot.memory_gib.values()) / gib
        slot.gpu_memory_utilization = USABLE if alone else math.ceil(need * 1000) / 1000


def _check_gpus(plan: Plan) -> None:
    machine, t = plan.machine, plan.training
    if not plan.checked:
        return  # a size is unknown (a note says so): nothing to add up
    job = 0.0 if t.on_cpu else sum(t.job_gib.values())
    kl = sum(t.kl_gib.values())
    for g, total in enumerate(machine.gpu_gib):
        here = [s for s in plan.servers if g in s.devices]
        jobs = _jobs_on(t, g)
        held = {s.name: s.gpu_memory_utilization * total for s in here}
        scoring = sum(held.values()) + jobs * kl
        usable = USABLE * total
        load = Load(f"GPU {g}", total, usable, scoring)
        what = " + ".join([f"{n} {v:.1f}" for n, v in held.items()]
                          + ([f"{jobs} KL model(s) {jobs * kl:.1f}"] if jobs and kl else []))
        if scoring > usable + 1e-6:
            plan.problems.append(f"GPU {g} needs {scoring:.1f} GiB while candidates are scored "
                                 f"({what}) but {usable:.1f} GiB are usable")
        if jobs and (job or kl):
            awake = {s.name: held[s.name] for s in here if not s.sleeps}
            asleep = sum(ASLEEP_GIB for s in here if s.sleeps)
            load.training_gib = sum(awake.values()) + asleep + jobs * max(job, kl)
            if load.training_gib > usable + 1e-6:
                parts = [f"{n} {v:.1f}" for n, v in awake.items()]
                parts += [f"asleep {asleep:.1f}"] if asleep else []
                parts.append(f"{jobs} training job(s) {jobs * max(job, kl):.1f}")
                plan.problems.append(f"GPU {g} needs {load.training_gib:.1f} GiB while "
                                     f"candidates train ({' + '.join(parts)}) but "
                                     f"{usable:.1f} GiB are usable")
        plan.loads.append(load)
