"""Integration: `selfdisco heldout` trains and scores frontier points for real (worker
processes, the smoke model served by the session's vLLM server), and a rerun measures nothing."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from selfdisco.config import load_config
from selfdisco.launch.start import prepare_run_dir
from selfdisco.rundir.archive import Archive

pytestmark = pytest.mark.integration


def heldout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdisco", "heldout", *args],
                          capture_output=True, text=True, timeout=600)


def test_frontier_points_are_trained_scored_and_kept(vllm_smoke, tmp_path):
    run_dir = prepare_run_dir(load_config("smoke"), tmp_path / "run")
    args = (str(run_dir), "--losses", "dpo", "--betas", "0.1,0.5", "--seeds", "1",
            "--server", vllm_smoke.base_url)
    result = heldout(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "frontier: 2 of 2 points to measure" in result.stdout
    assert "held-out [2/2] frontier dpo" in result.stdout
    archive = Archive(run_dir)
    rows = archive.heldout_rows("frontier")
    archive.close()
    assert [(r.loss_id, r.beta, r.status) for r in rows] == [("dpo", 0.1, "done"),
                                                              ("dpo", 0.5, "done")]
    for row in rows:
        # the sampled KL estimate is at or above 0 within its noise (the smoke model's policy
        # barely moves, so an estimate can come out a little below 0)
        kl, kl_stderr = row.metrics["kl"], row.metrics["kl_stderr"]
        assert math.isfinite(row.metrics["reward"]) and kl >= -3 * kl_stderr
        assert row.metrics["path"]  # the scaling path the common-KL reading uses
        assert (run_dir / "heldout" / "frontier" / "dpo" / f"beta{row.beta:g}-seed{row.seed}"
                / "adapter").is_dir()
    report = (run_dir / "report.md").read_text()
    assert "### Reward-vs-KL frontier (sentiment)" in report
    assert (run_dir / "heldout_frontier.png").is_file()

    again = heldout(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to measure" in again.stdout
