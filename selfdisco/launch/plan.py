"""The placement and memory plan: where each model server runs, with what memory share, who
sleeps while candidates train, and whether it all fits; made before anything starts.

The servers come from topology.server_roles (roles naming the same model share one). Each
managed server gets its GPUs (CUDA_VISIBLE_DEVICES), a tensor-parallel size (the fewest GPUs
its weights and one full-length sequence fit on) and a memory share (vLLM's
--gpu-memory-utilization; on CPU, its KV-cache bytes). Training jobs (and, for a task that
measures KL, the policy that the worker loads to measure it) get GPUs too: GPUs of their own
when there are enough (nothing then sleeps), else the policy server's GPU, where that server
sleeps while any job trains (topology's leases).

Estimates, per GPU (GiB = 2**30 bytes; a training job's and the KL model's: sizes.py): a
server takes its weights / tp + KV cache for KV_SEQUENCES full-length sequences (one when memory
is short) / tp + SERVER_OVERHEAD_GIB; a server alone on its GPUs takes vLLM's usual share, USABLE.
A GPU fits when, while candidates are scored (every server awake, each job with its KL model)
and while they train (sleeping servers keep ASLEEP_GIB), the total stays within USABLE of it.
On CPU: servers and jobs together within the machine's memory (nothing sleeps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from selfdisco.config import RunConfig
from selfdisco.errors import UserError
from selfdisco.llm.backend import detect_backend, resolve_dtype
from selfdisco.llm.machine import GIB, Machine, detect_machine
from selfdisco.llm.server import DEFAULT_KV_CACHE_BYTES
from selfdisco.llm.sizes import ModelSize, model_size
from selfdisco.llm.topology import ServerRoles, server_roles
from selfdisco.tasks import TaskContext, get_task, run_train_settings

USABLE = 0.90  # of each GPU, for all its users together (vLLM's own default share)
SERVER_OVERHEAD_GIB = 2.5  # per GPU: CUDA context, profiling activations, CUDA graphs, LoRA slots
ASLEEP_GIB = 1.0  # what a sleeping server keeps (CUDA context and graphs)
KV_SEQUENCES = 4  # full-length sequences of KV cache a shared server is sized for
CPU_SERVER_OVERHEAD_GIB = 1.5  # a vLLM CPU server's memory beside weights and KV cache


@dataclass
class ServerSlot:
    """One managed server in the plan.

    Attributes:
        name: policy, proposer or judge (the first role it serves).
        roles: every role it answers.
        devices: indices into the machine's GPUs; () on CPU.
        memory_gib: its estimate per device (weights, kv, overhead); {} when the size is unknown.
        sleeps: it sleeps while candidates train on its GPU.
    """

    name: str
    model: str
    roles: list[str]
    dtype: str
    size: ModelSize | None
    devices: tuple[int, ...] = ()
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    kv_cache_bytes: int | None = None
    memory_gib: dict[str, float] = field(default_factory=dict)
    sleeps: bool = False


@dataclass
class Training:
    """Where candidates are evaluated: "gpu", "cpu", "elsewhere" (a remote Ray cluster) or
    "none" (a replay); `jobs` at once; each job's estimate and its KL model's (empty: none).
    With `on_cpu` (training setting use_cpu) on a GPU machine, only the KL model uses the GPU."""

    where: str
    on_cpu: bool = False
    devices: tuple[int, ...] = ()
    jobs: int = 0
    job_gib: dict[str, float] = field(default_factory=dict)
    kl_gib: dict[str, float] = field(default_factory=dict)


@dataclass
class Load:
    """One device's total while candidates are scored and while they train (GiB)."""

    device: str
    total_gib: float
    usable_gib: float
    scoring_gib: float
    training_gib: float | None = None


@dataclass
class Plan:
    """The placement of a run's servers and training on a machine; `problems` say what does
    not fit (empty: it fits), `notes` what could not be checked."""

    machine: Machine
    servers: list[ServerSlot]
    attached: list[str]
    training: Training
    loads: list[Load] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def checked(self) -> bool:
        """Whether every size was known, so the memory was added up."""
        t = self.training
        return (all(s.size is not None for s in self.servers)
                and (t.where not in ("gpu", "cpu") or bool(t.job_gib)))

    def server(self, name: str) -> ServerSlot | None:
        return next((s for s in self.servers if s.name == name), None)

    def server_options(self, name: str) -> dict[str, Any]:
        """VLLMServer keyword arguments that apply this plan to the server `name`."""
        slot = self.server(name)
        if not self.machine.gpus:
            return {"kv_cache_bytes": slot.kv_cache_bytes}
        return {"devices": [self.machine.device_ids[d] for d in slot.devices],
                "tensor_parallel_size": slot.tensor_parallel_size,
                "gpu_memory_utilization": slot.gpu_memory_utilization,
                "enable_sleep_mode": slot.sleeps}

    def training_devices(self) -> str | None:
        """CUDA_VISIBLE_DEVICES for the workers; None when they train off this machine's GPUs."""
        if self.training.where != "gpu":
            return None
        return ",".join(self.machine.device_ids[d] for d in self.training.devices)

    def refusal(self) -> str:
        """Why the plan does not fit, with the figures and what to change."""
        if self.machine.gpus:
            fix = ("use more or larger GPUs, fewer workers (or the ray executor, which spreads "
                   "them over the GPUs), a shorter server.max_model_len, smaller models, or "
                   "servers running elsewhere (server.url, --proposer URL)")
        else:
            fix = ("use a machine with more memory, fewer workers, smaller models or a smaller "
                   "server.kv_cache_gib")
        return (f"the run does not fit on {self.machine.label()}: " + "; ".join(self.problems)
                + f". To fit: {fix}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(fits=self.fits, checked=self.checked)
        return data

    def describe(self) -> str:
        """The plan as lines for people."""
        lines = [f"machine: {self.machine.label()}"]
        for s in self.servers:
            where = (f"GPU {_listed(s.devices)}, tp {s.tensor_parallel_size}" if s.devices
                     else "not placed" if self.machine.gpus else "CPU")
            if s.gpu_memory_utilization is not None:
                gib = s.gpu_memory_utilization * min(self.machine.gpu_gib[d] for d in s.devices)
                share = f"memory share {s.gpu_memory_utilization:.3f} ({gib:.1f} GiB)"
            elif s.kv_cache_bytes is not None:
                share = f"KV cache {s.kv_cache_bytes / GIB:.1f} GiB"
            else:
                share = "no share"
            need = "needs " + gib_parts(s.memory_gib) if s.memory_gib else "size unknown"
            sleep = "sleeps while training" if s.sleeps else "awake while training"
            lines.append(f"server {s.name} ({'+'.join(s.roles)}): {s.model}, {s.dtype}, {where},"
                         f" {share}; {need}; {sleep}")
        lines += [f"attached: {a}" for a in self.attached]
        t = self.training
        if t.where in ("gpu", "cpu"):
            on = ("on CPU" if t.where == "cpu" else f"on GPU {_listed(t.devices)}" if t.devices
                  else "not placed")
            if t.on_cpu and t.where == "gpu":
                on = f"on CPU (their KL model {on})"
            job = gib_parts(t.job_gib) if t.job_gib else "size unknown"
            lines.append(f"training: {t.jobs} job(s) at once, {on}; each {job}")
            if t.kl_gib:
                lines.append(f"KL model per scoring job: {gib_parts(t.kl_gib)}")
        else:
            lines.append({"elsewhere": "training: on the Ray cluster's nodes, not here",
                          "none": "training: none (answers replayed)"}[t.where])
        used = {d for s in self.servers for d in s.devices} | set(t.devices)
        idle = [g for g in range(self.machine.gpus) if g not in used]
        for load in self.loads:
            if load.device in {f"GPU {g}" for g in idle}:
                continue
            text = (f"{load.device}: {load.scoring_gib:.1f} GiB while scoring")
            if load.training_gib is not None:
                text += f", {load.training_gib:.1f} GiB while training"
            lines.append(f"{text}; usable {load.usable_gib:.1f} of {load.total_gib:.0f} GiB")
        if idle and self.servers and not self.problems:
            lines.append(f"idle: GPU {_listed(idle)}")
        lines += [f"note: {n}" for n in self.notes]
        if not self.fits:
            lines.append("does not fit: " + "; ".join(self.problems))
        else:
            lines.append("fits" if self.checked else "memory not checked (see the notes)")
        return "\n".join(lines)


def _listed(devices) -> str:
    return ",".join(map(str, devices))


def gib_parts(parts: dict[str, float]) -> str:
    inner = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
    return f"{sum(parts.values()):.1f} GiB ({inner})"


def make_plan(config: RunConfig, machine: Machine,
              params: dict[str, float] | None = None) -> Plan:
    """The plan for `config` on `machine`.

    Args:
        params: parameter counts by model name, replacing what the plan reads or knows.
    """
    task = get_task(config.task.name)
    settings = run_train_settings(config)
    roles = server_roles(config, task.needs_judge)
    dtype = resolve_dtype(config.server.dtype, "cuda" if machine.gpus else "cpu", settings.bf16)
    params = params or {}
    if roles.proposer == "replay":
        return Plan(machine, [], [], Training("none"))
    sizes = {m: model_size(m, params.get(m)) for m in
             (config.models.policy, config.proposer_model, config.judge_model)}
    servers = [ServerSlot(name, model, answers, dtype, sizes[model])
               for name, model, answers in _managed(config, roles)]
    attached = [f"{role} at "
                f"{config.server.url if role == 'policy' else config.server.proposer_source}"
                for role in ("policy", "proposer", "judge") if getattr(roles, role) == "attached"]
    remote = config.executor == "ray" and str(
        config.executor_options.get("address", "")).startswith("ray://")
    where = "elsewhere" if remote else "gpu" if machine.gpus else "cpu"
    training = Training(where, on_cpu=settings.use_cpu, jobs=0 if remote else config.workers)
    policy = sizes[config.models.policy]
    if policy is not None and not remote:
        training.job_gib = policy.training_gib(settings, not settings.use_cpu and where == "gpu")
        if _measures_kl(task, config):
            training.kl_gib = policy.kl_gib(dtype, settings.max_length, where == "gpu")
    plan = Plan(machine, servers, attached, training)
    needed = {s.model for s in servers} | ({config.models.policy} if not remote else set())
    for model in sorted(m for m in needed if sizes[m] is None):
        plan.notes.append(f"the size of {model} is not known here (no config.json in a local "
                          "directory or the Hugging Face cache, not in the table of known "
                          f"models), so memory is not checked: give it, e.g. --params "
                          f"{model}=7.6 (billions)")
    if where == "gpu" and settings.use_cpu:
        plan.notes.append("candidates train on the CPU (training setting use_cpu): only their "
                          "KL model is counted on the GPU")
    if machine.gpus:
        place_on_gpus(plan, config)
    else:
        kv = int(config.server.kv_cache_gib * GIB) if config.server.kv_cache_gib else \
            DEFAULT_KV_CACHE_BYTES
        _place_on_cpu(plan, config, kv)
    return plan


def plan_run(config: RunConfig) -> Plan:
    """The plan for a run on this machine; UserError, with the figures, when it cannot fit."""
    plan = make_plan(config, detect_machine(detect_backend()))
    if not plan.fits:
        raise UserError(plan.refusal())
    return plan


def _managed(config: RunConfig, roles: ServerRoles) -> list[tuple[str, str, list[str]]]:
    """(name, model, roles answered) of each server selfdisco starts."""
    out = []
    if roles.policy == "managed":
        out.append(("policy", config.models.policy, ["policy"] + [
            r for r in ("proposer", "judge") if getattr(roles, r) == "policy"]))
    if roles.proposer == "managed":
        out.append(("proposer", config.proposer_model,
                    ["proposer"] + (["judge"] if roles.judge == "proposer" else [])))
    if roles.judge == "managed":
        out.append(("judge", config.judge_model, ["judge"]))
    return out


def _measures_kl(task: Any, config: RunConfig) -> bool:
    """Whether the task's settings for this run measure KL (the worker then loads the policy)."""
    settings_of = getattr(task, "settings", None)
    if settings_of is None:
        return False

    settings = settings_of(TaskContext(preset=config.preset, options=dict(config.task.options)))
    return bool(getattr(settings, "measure_kl", False))


def _place_on_cpu(plan: Plan, config: RunConfig, kv_bytes: int) -> None:
    """Every server's KV cache, and servers with jobs within the machine's memory."""
    for slot in plan.servers:
        slot.kv_cache_bytes = kv_bytes
        if slot.size is None:
            continue
        slot.memory_gib = slot.size.server_gib(slot.dtype, kv_bytes, 1, CPU_SERVER_OVERHEAD_GIB)
        one = slot.size.kv_bytes(slot.dtype, config.server.max_model_len)
        if one > kv_bytes:
            plan.problems.append(
                f"the {slot.name} server's KV cache (server.kv_cache_gib, {kv_bytes / GIB:.2f} "
                f"GiB) cannot hold one sequence of server.max_model_len = "
                f"{config.server.max_model_len} tokens ({one / GIB:.2f} GiB): raise the one or "
                "lower the other")
    if not plan.checked:
        return
    t = plan.training
    total = sum(sum(s.memory_gib.values()) for s in plan.servers)
    if t.where == "cpu":
        total += t.jobs * max(sum(t.job_gib.values()), sum(t.kl_gib.values()))
    memory = plan.machine.memory_gib
    plan.loads.append(Load("CPU", memory, memory, total))
    if total > memory:
        plan.problems.append(f"servers and {t.jobs} training job(s) need {total:.1f} GiB of "
                             f"memory; the machine has {memory:.1f} GiB")


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
