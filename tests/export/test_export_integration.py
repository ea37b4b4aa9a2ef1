"""A smoke run's loss exported, then trained again with `selfdisco train --from`: the fitness is
reproduced within its recorded standard error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfdisco.rundir.archive import Archive

pytestmark = pytest.mark.integration


def selfdisco(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdisco", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_export_then_train_from_reproduces_the_fitness(vllm_smoke, tmp_path):
    run_dir = tmp_path / "run"
    result = selfdisco("run", "--preset", "smoke", "--no-tui", "--run-dir", str(run_dir),
                       "--set", f"server.url={vllm_smoke.base_url}",
                       "--set", "server.check_numerics=false",
                       "--set", "discovery.generations=1", "--candidates", "1",
                       "--set", "discovery.max_resamples=0",
                       "--set", 'discovery.burn_in=["dpo"]')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = Archive(run_dir).get("burn-dpo")
    assert row.status == "scored" and row.stderr > 0

    out = tmp_path / "export"
    result = selfdisco("export", str(run_dir), "burn-dpo", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert 'trains like TRL\'s built-in loss_type="sigmoid"' in result.stdout
    loss_py = (out / "loss.py").read_text()
    print(loss_py)  # the exported file, for the record
    assert row.code.rstrip() in loss_py and "per_pair_loss = dpo" in loss_py
    assert (out / "pairs.jsonl").is_file()  # the run's pairs travel with the recipe

    result = selfdisco("train", "--from", str(out), "--server", vllm_smoke.base_url, "--json",
                       "--out", str(tmp_path / "again"), "--ref-cache", str(tmp_path / "ref"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["recorded"]["fitness"] == row.fitness
    assert report["result"]["status"] == "scored"
    assert report["difference"]["paired"]
    assert abs(report["result"]["fitness"] - row.fitness) <= row.stderr
    assert report["within_stderr"] is True
