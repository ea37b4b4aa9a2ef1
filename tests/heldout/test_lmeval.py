"""lm-eval protocol: the shipped offline task, lm-eval's own back-ends, options and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfdisco.errors import UserError
from selfdisco.heldout import lmeval
from selfdisco.heldout.lmeval import (
    BASE_ID,
    SHIPPED_TASK,
    SHIPPED_TASKS,
    LmEvalSettings,
    model_args,
    report_lines,
)
from selfdisco.rundir.archive import Archive, HeldoutRow

TASK_DIR = SHIPPED_TASKS / SHIPPED_TASK


@pytest.fixture(scope="module")
def manager():
    return lmeval.task_manager([SHIPPED_TASK])


def test_shipped_task_data_is_balanced():
    rows = [json.loads(line) for line in (TASK_DIR / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    assert sorted({r["label"] for r in rows}) == [0, 1]
    assert sum(r["label"] for r in rows) == 20
    assert len({r["review"] for r in rows}) == 40


def test_shipped_task_loads_offline(manager):
    task = manager.load([SHIPPED_TASK])["tasks"][SHIPPED_TASK]
    docs = list(task.test_docs())
    assert len(docs) == 40
    assert task.doc_to_choice(docs[0]) == ["negative", "positive"]
    assert task.doc_to_text(docs[0]).startswith("Review: ")


@pytest.mark.integration
def test_unknown_task_is_a_clear_error():
    """Integration: a task name that is not shipped makes lm-eval index its own ~10k task
    configs (about 30 s on 2 cores)."""
    with pytest.raises(UserError, match="unknown lm-eval task.*no_such_task"):
        lmeval.task_manager(["no_such_task"])


def test_model_args_for_each_backend():
    assert model_args("hf", "/m", None, "cpu") == {"pretrained": "/m", "dtype": "float32",
                                                   "device": "cpu"}
    assert model_args("hf", "/m", "/a", "cpu")["peft"] == "/a"
    with_lora = model_args("vllm", "/m", "/a", "cuda")
    assert with_lora["lora_local_path"] == "/a" and "peft" not in with_lora
    assert "lora_local_path" not in model_args("vllm", "/m", None, "cuda")


def test_options_are_checked():
    settings = LmEvalSettings.from_options({"lm_eval_tasks": " a, b ,", "lm_eval_limit": "5",
                                            "allow_self_judge": "true"})
    assert settings.task_names() == ["a", "b"] and settings.lm_eval_limit == 5
    for options, message in (({"lm_eval_limit": "-1"}, "whole number"),
                             ({"lm_eval_backend": "onnx"}, "hf or vllm"),
                             ({"lm_eval_adapters": "best"}, "heldout or run"),
                             ({"lm_eval_tasks": " , "}, "empty")):
        with pytest.raises(UserError, match=message):
            LmEvalSettings.from_options(options)


def test_report_table_has_a_row_per_policy():
    results = {SHIPPED_TASK: {"acc": 0.55, "acc_stderr": 0.08, "acc_norm": 0.5}}
    rows = [HeldoutRow("lmeval", BASE_ID, 0.0, 0, "done",
                       {"loss_name": "base model", "results": results, "backend": "hf",
                        "limit": 8}),
            HeldoutRow("lmeval", "dpo", 0.05, 1, "failed",
                       {"loss_name": "dpo", "reason": "diverged"})]
    lines = report_lines(rows, Path("."))
    assert f"| policy | {SHIPPED_TASK} |" in lines
    assert "| base model | 0.55 ± 0.08 (0.50) |" in lines  # rates: formatting.format_rate
    assert "- dpo: failed (diverged)" in lines
    assert "first 8 documents" in " ".join(lines)


def test_run_adapters_come_from_the_archive(tmp_path):
    from types import SimpleNamespace

    from selfdisco.heldout import HeldoutLoss, Point

    adapter = tmp_path / "candidates" / "c1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    archive = Archive(tmp_path)
    archive.add("c1", 1, "candidate", "scored", name="mine", metrics={"adapter": str(adapter)})
    archive.close()
    ctx = SimpleNamespace(run_dir=tmp_path)
    settings = LmEvalSettings(lm_eval_adapters="run")
    point = Point("lmeval", "c1", 0.05, 1)
    assert lmeval._adapter(ctx, point, HeldoutLoss("c1", "mine", ""), settings) == \
        (str(adapter), "")
    missing, reason = lmeval._adapter(ctx, point, HeldoutLoss("dpo", "dpo", ""), settings)
    assert missing is None and "lm_eval_adapters=heldout" in reason


def test_points_are_the_base_then_each_loss():
    from types import SimpleNamespace

    from selfdisco.config import RunConfig
    from selfdisco.heldout import HeldoutLoss

    ctx = SimpleNamespace(config=RunConfig(), seeds=[11, 12], options={},
                          losses=[HeldoutLoss("c1", "mine", ""), HeldoutLoss("dpo", "dpo", "")])
    points = lmeval.points(ctx)
    assert [(p.loss_id, p.seed) for p in points] == [(BASE_ID, 0), ("c1", 11), ("dpo", 11)]
    ctx.options = {"lm_eval_adapters": "run"}
    assert [p.seed for p in lmeval.points(ctx)][1:] == [lmeval.RUN_SEED] * 2


def test_registered_as_a_protocol():
    from selfdisco.heldout import PROTOCOLS, protocol_hook

    assert PROTOCOLS.load("lmeval") is lmeval.run
    assert protocol_hook("lmeval", "report_lines") is lmeval.report_lines


@pytest.mark.integration
def test_lm_eval_runs_through_selfdisco_for_base_and_adapter(tmp_path, smoke_lora_adapter):
    """The lmeval protocol on the smoke model: the base model and an adapter (the trainer is
    replaced by the fixture's adapter) each get accuracy figures on the shipped task, recorded
    in the archive, and a second run measures nothing again."""
    from selfdisco.config import RunConfig
    from selfdisco.execution.records import Result
    from selfdisco.heldout import HeldoutContext, HeldoutLoss

    archive = Archive(tmp_path)
    trained = []

    def evaluate(point, code, task_options=None):
        trained.append(point.loss_id)
        return Result(status="scored", fitness=0.0, adapter=str(smoke_lora_adapter))

    def record(point, metrics, status="done"):
        archive.put_heldout(point.protocol, point.loss_id, point.beta, point.seed, status,
                            metrics)

    def done(point):
        return any((r.loss_id, r.beta, r.seed) == (point.loss_id, point.beta, point.seed)
                   for r in archive.heldout_rows("lmeval"))

    config = RunConfig(preset="smoke")
    config.models.policy = "smoke-llama"
    config.train.recipe = "smoke"
    ctx = HeldoutContext(run_dir=tmp_path, config=config,
                         losses=[HeldoutLoss("dpo", "dpo", "code")], betas=[0.05], seeds=[7],
                         evaluate=evaluate, policy=lambda: None, record=record, done=done,
                         emit=lambda *a, **k: None, options={"lm_eval_limit": "8"})
    lmeval.run(ctx)
    rows = archive.heldout_rows("lmeval")
    assert [(r.loss_id, r.status) for r in rows] == [(BASE_ID, "done"), ("dpo", "done")]
    for row in rows:
        figures = row.metrics["results"][SHIPPED_TASK]
        assert 0.0 <= figures["acc"] <= 1.0 and figures["acc_stderr"] > 0
    assert rows[1].metrics["adapter"] == str(smoke_lora_adapter)
    assert trained == ["dpo"]
    lmeval.run(ctx)
    assert len(archive.heldout_rows("lmeval")) == 2 and trained == ["dpo"]


@pytest.fixture
def cpu_run(tmp_path):
    """A cpu-preset run with one scored discovery (60 s training, 40 s scoring)."""
    from selfdisco.config import load_config
    from selfdisco.launch.start import prepare_run_dir
    from selfdisco.losses import catalog

    run = prepare_run_dir(load_config("cpu"), tmp_path / "run")
    archive = Archive(run)
    archive.add("g01-c1", 1, "proposal", "scored", name="mine", fitness=0.4, stderr=0.02,
                code=catalog.CATALOG["ipo"].candidate.code,
                timings={"data": 0.0, "train": 60.0, "score": 40.0})
    archive.close()
    return run


def test_the_heldout_command_plans_pairwise_and_lmeval(cpu_run, capsys):
    from selfdisco.cli import main

    assert main(["heldout", str(cpu_run), "--protocols", "pairwise,lmeval", "--lm-eval-tasks",
                 SHIPPED_TASK, "--option", "allow_self_judge=true", "--estimate",
                 "--json"]) == 0
    plan = {p["name"]: p for p in json.loads(capsys.readouterr().out)["protocols"]}
    assert plan["pairwise"]["total"] == 3  # the best discovery, dpo and lrml
    assert plan["lmeval"]["total"] == 4  # and the base model
    assert plan["lmeval"]["seconds_per_point"] == 100.0  # the run's own training and scoring
    assert main(["heldout", str(cpu_run), "--protocols", "lmeval", "--lm-eval-tasks", " , ",
                 "--estimate"]) == 2
    assert "lm_eval_tasks is empty" in capsys.readouterr().err
