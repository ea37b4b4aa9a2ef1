"""The Python API (selfdisco/api.py), each function used as a user would through `selfdisco`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from loop_helpers import CurveEvaluator, ScriptedProposer, answer

import selfdisco
from selfdisco.config import read_run_config
from selfdisco.errors import UserError
from selfdisco.llm.cache import Recorder

DPO = ("def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,\n"
       "        reference_rejected_logps, beta):\n"
       "    rho = (policy_chosen_logps - reference_chosen_logps) - (\n"
       "        policy_rejected_logps - reference_rejected_logps)\n"
       "    return -torch.nn.functional.logsigmoid(beta * rho)\n")
CONSTANT = ("def constant(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,\n"
            "             reference_rejected_logps, beta):\n"
            "    return policy_chosen_logps * 0.0 + 1.0\n")
PAIRS = [{"prompt": f"Review {i}:", "chosen": " lovely", "rejected": " awful"} for i in range(8)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished run recorded with a scripted proposer (its answers in llm/), with the services
    start_run gives a replay, so a replay of it asks the same questions."""
    from selfdisco.config import load_config
    from selfdisco.discovery.interface import Services
    from selfdisco.discovery.loop import Discovery
    from selfdisco.losses import screen
    from selfdisco.losses.catalog import catalog_entry
    from selfdisco.losses.parse import parse_answer
    from selfdisco.rundir.archive import Archive
    from selfdisco.rundir.events import EventWriter
    from selfdisco.tasks import get_task, run_train_settings

    run = tmp_path_factory.mktemp("api") / "recorded"
    answers = [answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
               answer("hinge_exp", "0.7 * torch.relu(1 - 2.0 * x) + 0.3 * torch.exp(-1.0 * x)")]
    config = load_config("smoke", overrides={"discovery": {
        "generations": 1, "candidates_per_generation": 2, "code_grammar": "free"}})
    run.mkdir(parents=True)
    (run / "config.toml").write_text(config.to_toml())
    proposer = ScriptedProposer(answers, recorder=Recorder(run / "llm"))
    description = f"Fitness here is the {get_task('sentiment').description}; higher is better."
    services = Services(proposer=proposer, evaluator=CurveEvaluator(), screen=screen,
                        parse=parse_answer, catalog=catalog_entry, adapters=proposer,
                        task_description=description, beta=run_train_settings(config).beta)
    Discovery(config, run, Archive(run), EventWriter(run), services).run()
    return run


def replay_config(recorded):
    """The recorded run's config with its proposer replayed: a discovery that needs no model."""
    config = read_run_config(recorded)
    server = dataclasses.replace(config.server, proposer_source=f"replay:{recorded}")
    return dataclasses.replace(config, server=server)


def test_import_selfdisco_stays_light():
    code = ("import sys, selfdisco; selfdisco.run; "
            "print(sorted(m for m in ('torch', 'trl', 'transformers', 'vllm', 'textual') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_run_then_load_archive(recorded, tmp_path):
    run_dir = selfdisco.run(replay_config(recorded), run_dir=tmp_path / "run", progress=False)
    rows = {r.id: r for r in selfdisco.load_archive(run_dir)}
    assert {r.id: (r.code, r.fitness) for r in selfdisco.load_archive(recorded)} == {
        id: (r.code, r.fitness) for id, r in rows.items()}
    assert rows["g01-c2"].name == "hinge_exp" and rows["g01-c2"].status == "scored"


def test_resume_a_run_that_had_not_started(recorded, tmp_path):
    from selfdisco.launch.start import prepare_run_dir, run_finished

    run_dir = prepare_run_dir(replay_config(recorded), tmp_path / "run")
    assert selfdisco.resume(run_dir, progress=False) == run_dir.resolve()
    assert run_finished(run_dir)
    assert len(selfdisco.load_archive(run_dir)) == len(selfdisco.load_archive(recorded))


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no run directory"):
        selfdisco.load_archive(tmp_path / "nowhere")
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        selfdisco.run("nope")


def test_screen_and_compile_a_loss():
    result = selfdisco.screen_loss(DPO)
    assert result.ok and result.fingerprint is not None
    refused = selfdisco.screen_loss(CONSTANT)
    assert not refused.ok and refused.reason
    fn = selfdisco.compile_loss(DPO)
    zero = torch.zeros(3)
    torch.testing.assert_close(fn(zero + 1, zero, zero, zero, 1.0),
                               -torch.nn.functional.logsigmoid(torch.ones(3)))


def test_train_loss_under_code_and_under_a_callable(tmp_path):
    result = selfdisco.train_loss(DPO, PAIRS, preset="smoke", out_dir=tmp_path / "code",
                                  max_steps=2)
    assert result.ok and result.steps_done == 2
    assert (tmp_path / "code" / "adapter" / "adapter_config.json").is_file()
    fn = selfdisco.compile_loss(DPO)
    assert selfdisco.train_loss(fn, PAIRS, preset="smoke", out_dir=tmp_path / "fn",
                                max_steps=1).ok
    with pytest.raises(UserError, match="failed screening"):
        selfdisco.train_loss(CONSTANT, PAIRS, preset="smoke", out_dir=tmp_path / "bad")


def test_train_loss_trains_with_the_recipe_discovery_uses(monkeypatch, tmp_path):
    from selfdisco.config import load_config
    from selfdisco.tasks import run_train_settings
    from selfdisco.train import adapter

    calls = []
    monkeypatch.setattr(adapter, "train_adapter", lambda **kwargs: calls.append(kwargs))
    selfdisco.train_loss(DPO, PAIRS, out_dir=tmp_path, learning_rate=3e-4)
    cpu = load_config("cpu")
    assert calls[0]["settings"] == dataclasses.replace(run_train_settings(cpu),
                                                       learning_rate=3e-4)
    assert calls[0]["model_path"] == cpu.models.policy
    selfdisco.train_loss(DPO, PAIRS, task="mtbench", out_dir=tmp_path)
    on_mtbench = load_config("cpu", overrides={"task": {"name": "mtbench"}})
    assert calls[1]["settings"] == run_train_settings(on_mtbench)
    with pytest.raises(UserError, match="learning_rate must be above 0"):
        selfdisco.train_loss(DPO, PAIRS, out_dir=tmp_path, learning_rate=0)
    with pytest.raises(UserError, match="unknown task 'nope'"):
        selfdisco.train_loss(DPO, PAIRS, out_dir=tmp_path, task="nope")


def test_export_loss(recorded, tmp_path):
    out = selfdisco.export_loss(recorded, "g01-c1", out_dir=tmp_path / "steeper")
    assert {p.name for p in out.iterdir()} >= {"loss.py", "trainer.py", "recipe.toml"}
    assert "steeper" in (out / "loss.py").read_text()
    assert selfdisco.export_loss(recorded) == recorded.resolve() / "export" / "g01-c2"
