"""The report draws the loss shapes recorded at screening, at the beta the run trained with."""

from __future__ import annotations

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.config import load_config
from selfdisco.tasks import run_train_settings

ANSWERS = [answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
           answer("steeper", "1.0 * F.softplus(-3.0 * x)")]


@pytest.mark.parametrize(("preset", "overrides", "beta"), [
    ("cpu", {}, 0.1),  # the sentiment task's cpu recipe raises the preset's 0.05
    ("cpu", {"beta": 0.3}, 0.3),
    ("smoke", {}, 0.05),
])
def test_shapes_are_drawn_at_the_trained_beta(tmp_path, preset, overrides, beta):
    from selfdisco import report

    config = load_config(preset, overrides={"train": {"overrides": overrides}})
    assert run_train_settings(config).beta == beta
    run = tmp_path / "run"
    loop = make_loop(run, ScriptedProposer(list(ANSWERS)), CurveEvaluator(), generations=1)
    loop.services.beta = run_train_settings(config).beta  # as runner.py sets it
    loop.run()
    (run / "config.toml").write_text(config.to_toml())
    text = report.write_report(run).read_text()
    assert f"Drawn at beta = {beta:g}, the beta the run trained with" in text
    assert (run / "report_shapes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_recorded_shapes_gets_a_report_without_them(tmp_path):
    from selfdisco import report
    from selfdisco.rundir.archive import REFERENCE_SHAPE, Archive

    run = tmp_path / "run"
    make_loop(run, ScriptedProposer(list(ANSWERS)), CurveEvaluator(), generations=1).run()
    archive = Archive(run)  # as an archive from before shapes were recorded
    archive.db.execute("UPDATE candidates SET shape = NULL")
    archive.db.execute("DELETE FROM meta WHERE key = ?", (REFERENCE_SHAPE,))
    archive.close()
    text = report.write_report(run).read_text()
    assert "No loss shapes were recorded in this run" in text
    assert not (run / "report_shapes.png").exists()


def test_the_report_says_which_kl_aware_fitness_it_ranks_by():
    from types import SimpleNamespace

    from selfdisco.report import fitness_rule

    def rows(**metrics):
        return [SimpleNamespace(metrics=dict(metrics)), SimpleNamespace(metrics={})]

    old = fitness_rule(rows(kl_budget=6.0, kl_weight=0.0))[0]
    assert "KL budget of 6 nats" in old and "read at its own KL" in old
    new = fitness_rule(rows(kl_budget=6.0, kl_weight=0.0, fitness_version=2))[0]
    assert "grown to it" in new and "exact per-token" in new
    assert fitness_rule(rows(kl_budget=0.0, kl_weight=0.02)) == [
        "Fitness: reward - 0.02 x KL (nats)."]
    assert fitness_rule(rows(accuracy=0.9)) == []
