"""Run presets: each loads, validates and is known to every table a preset name is looked up in,
and every flag that takes a preset or a task offers exactly the registered names."""

from __future__ import annotations

import argparse

import pytest

from selfdisco.cli import build_parser
from selfdisco.config import load_config
from selfdisco.launch.checks import check_run
from selfdisco.presets import PRESETS, SAME_SCALE_AS, per_preset
from selfdisco.tasks import get_task, task_names
from selfdisco.train.settings import TrainSettings


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_loads_and_validates(name):
    config = load_config(name)
    settings = check_run(config)
    assert settings.lora_r <= config.server.max_lora_rank
    assert config.models.policy and config.train.recipe == name


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("task_name", task_names())
def test_every_task_has_settings_and_a_recipe_for_every_preset(name, task_name):
    task = get_task(task_name)
    task.check_options(name, {})  # a run's preset picks each task's sizes (--set task.name=...)
    if task.kind == "preference":  # only preference tasks train adapters
        assert isinstance(task.train_settings(name), TrainSettings)


def test_a_preset_at_another_ones_scale_shares_its_rows():
    table = per_preset({"smoke": 1, "cpu": 2, "gpu-zephyr": 3})
    assert list(table) == list(PRESETS)
    for name, scale in SAME_SCALE_AS.items():
        assert table[name] == table[scale]
        assert get_task("sentiment").train_settings(name) == \
            get_task("sentiment").train_settings(scale)
    with pytest.raises(ValueError, match="no preset named cpuu"):
        per_preset({"cpuu": 1})


def _flag(path: list[str], flag: str) -> argparse.Action:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return next(a for a in parser._actions if flag in a.option_strings)


@pytest.mark.parametrize("path", [["run"], ["plan"], ["config", "show"], ["train"], ["eval"]])
def test_preset_flags_offer_exactly_the_presets(path):
    assert list(_flag(path, "--preset").choices) == list(PRESETS)


@pytest.mark.parametrize("path", [["run"], ["train"], ["eval"]])
def test_task_flags_offer_exactly_the_registered_tasks(path):
    assert list(_flag(path, "--task").choices) == task_names()


def test_the_self_improving_gpu_preset_proposes_with_the_policys_base_model():
    config = load_config("gpu-selfimprove")
    assert config.discovery.self_improve == "policy"
    assert config.proposer_model == config.models.policy == "Qwen/Qwen2.5-7B-Instruct"
    judge_family = config.judge_model.split("/")[0]
    assert judge_family not in ("", "Qwen") and config.judge_model != config.models.policy
    assert (config.task.name, config.task.options["data"]) == ("mtbench", "argilla/dpo-mix-7k")
    settings = check_run(config)
    assert settings.beta == 0.05 and settings.lora_r > 0 and not settings.use_cpu
    assert settings.bf16


def test_gpu_zephyr_stays_the_papers_policy():
    config = load_config("gpu-zephyr")
    assert config.models.policy == "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1"
    assert config.discovery.self_improve == "off"
    assert check_run(config).beta == 0.05
