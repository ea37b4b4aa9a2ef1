"""The report draws loss shapes at the beta the run trained with."""

from __future__ import annotations

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.config import load_config, run_train_settings

ANSWERS = [answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
           answer("steeper", "1.0 * F.softplus(-3.0 * x)")]


@pytest.mark.parametrize(("preset", "overrides", "beta"), [
    ("cpu", {}, 0.1),  # the sentiment task's cpu recipe raises the preset's 0.05
    ("cpu", {"beta": 0.3}, 0.3),
    ("smoke", {}, 0.05),
])
def test_shapes_are_drawn_at_the_trained_beta(tmp_path, monkeypatch, preset, overrides, beta):
    from selfdisco import report

    run = tmp_path / "run"
    make_loop(run, ScriptedProposer(list(ANSWERS)), CurveEvaluator(), generations=1).run()
    config = load_config(preset, overrides={"train": {"overrides": overrides}})
    (run / "config.toml").write_text(config.to_toml())
    assert run_train_settings(config).beta == beta
    drawn = []

    def plot_shapes(rows, beta, path):
        drawn.append(beta)
        return True

    monkeypatch.setattr(report, "plot_shapes", plot_shapes)
    text = report.write_report(run).read_text()
    assert drawn == [beta]
    assert f"Drawn at beta = {beta:g}, the beta the run trained with." in text


def test_the_tui_draws_shapes_at_the_trained_beta(tmp_path):
    from selfdisco.tui.rundir import run_beta

    run = tmp_path / "run"
    run.mkdir()
    assert run_beta(run, 0.05) == 0.05  # no config yet
    config = load_config("cpu", overrides={"train": {"overrides": {"max_steps": 3}}})
    (run / "config.toml").write_text(config.to_toml())
    assert run_beta(run, 0.05) == 0.1
