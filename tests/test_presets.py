"""Run presets: each loads, validates and is known to every table a preset name is looked up in."""

from __future__ import annotations

import pytest

from selfdisco.commands.train import PRESET_CHOICES
from selfdisco.config import load_config
from selfdisco.launch.checks import check_run
from selfdisco.presets import PRESETS
from selfdisco.tasks import get_task, task_names
from selfdisco.tasks.base import PRESETS as TASK_PRESETS
from selfdisco.train.settings import PRESET_MODELS, TrainSettings


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_loads_and_validates(name):
    config = load_config(name)
    settings = check_run(config)
    assert settings.lora_r <= config.server.max_lora_rank
    assert name in TASK_PRESETS
    for task in task_names():  # a run's preset picks each task's sizes (--set task.name=...)
        get_task(task).check_options(name, {})
    assert config.train.preset in PRESET_MODELS and config.train.preset in PRESET_CHOICES


def test_training_presets_and_their_models_are_one_list():
    assert set(PRESET_CHOICES) == set(PRESET_MODELS)
    for name in PRESET_MODELS:
        TrainSettings.for_preset(name)


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
    assert PRESET_MODELS[config.train.preset] == config.models.policy


def test_gpu_zephyr_stays_the_papers_policy():
    config = load_config("gpu-zephyr")
    assert config.models.policy == "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1"
    assert config.discovery.self_improve == "off"
    assert check_run(config).beta == 0.05
