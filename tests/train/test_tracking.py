"""Experiment tracking: train.report_to reaches TRL's TrainingArguments, a missing tracker
package is a clear error, and a candidate's outcome becomes the tracker run's summary."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.execution.records import Job, Result
from selfdisco.launch.checks import check_run
from selfdisco.tasks import run_train_settings
from selfdisco.train.settings import SMOKE_RECIPE, TrainSettings
from selfdisco.train.tracking import check_trackers, log_summary, summary_scalars

missing = pytest.mark.skipif(importlib.util.find_spec("wandb") is not None,
                             reason="wandb is installed here")


def test_off_by_default_and_none_means_off():
    config = load_config("smoke")
    assert config.train.report_to == []
    assert run_train_settings(config).report_to == ()
    config = load_config("smoke", overrides={"train": {"report_to": ["none"]}})
    assert run_train_settings(config).report_to == ()


@missing
def test_a_tracker_that_is_not_installed_is_a_clear_error():
    config = load_config("smoke", overrides={"train": {"report_to": ["wandb"]}})
    with pytest.raises(UserError, match="wandb package is not installed: pip install wandb"):
        check_run(config)


def test_an_unknown_tracker_or_a_wrong_type_is_a_clear_error():
    with pytest.raises(UserError, match="'mlflow', which is not a tracker.*tensorboard, wandb"):
        check_trackers(["mlflow"])
    with pytest.raises(UserError, match="must be a list of tracker names"):
        check_trackers([1])


def test_report_to_reaches_the_training_arguments(tmp_path):
    from selfdisco.train.adapter import trainer_parts

    settings = SMOKE_RECIPE
    # Built directly: the trackers' packages are not installed here, and this checks only
    # that the setting is handed to TRL as it is.
    tracked = TrainSettings(**{**settings.to_dict(), "report_to": ["tensorboard", "wandb"]})
    parts = trainer_parts("smoke-llama", tracked, tmp_path)
    assert parts["args"].report_to == ["tensorboard", "wandb"]
    assert trainer_parts("smoke-llama", settings, tmp_path)["args"].report_to == []


def test_the_setting_travels_in_the_job_but_is_no_part_of_the_recipe():
    settings = TrainSettings(report_to=("wandb",))
    job = Job(task="sentiment", task_options={}, task_preset="smoke", task_seed=1, train_seed=2,
              model_path="m", cache_dir="c", ref_cache_dir="r", train_settings=settings,
              server_url="http://x/v1", served_model="m")
    assert Job.from_dict(job.to_dict()).train_settings.report_to == ("wandb",)
    assert settings.recipe() == TrainSettings().recipe()


def test_summary_scalars_keep_numbers_and_prefix_training_metrics():
    scalars = summary_scalars(0.5, 0.1, {"kl": 0.2, "n": 8, "scorer": "vader", "ok": True,
                                         "train": {"loss": 0.6, "steps": 4}})
    assert scalars == {"fitness": 0.5, "fitness_stderr": 0.1, "kl": 0.2, "n": 8.0,
                       "train/loss": 0.6, "train/steps": 4.0}


def test_wandb_summary_gets_fitness_and_metrics(monkeypatch, tmp_path):
    runs = []

    class Run:
        def __init__(self, **kwargs):
            self.kwargs, self.summary = kwargs, {}
            runs.append(self)

    fake = types.ModuleType("wandb")  # the service, not the code under test
    fake.run = None
    fake.init = lambda **kwargs: Run(**kwargs)
    fake.finish = lambda: setattr(fake, "finished", True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    log_summary(("wandb",), tmp_path, name="g01-c1", status="scored", fitness=0.7, stderr=0.05,
                metrics={"kl": 0.3, "train": {"loss": 0.4}})
    assert runs[0].kwargs["name"] == "g01-c1"
    assert runs[0].summary == {"fitness": 0.7, "fitness_stderr": 0.05, "kl": 0.3,
                               "train/loss": 0.4, "status": "scored", "candidate": "g01-c1"}
    assert fake.finished


def test_a_failing_tracker_changes_no_result(monkeypatch, tmp_path, capsys):
    from selfdisco.execution import worker

    broken = types.ModuleType("wandb")
    broken.run = None

    def refuse(**kwargs):
        raise RuntimeError("no network")

    broken.init = refuse
    monkeypatch.setitem(sys.modules, "wandb", broken)
    job = Job(task="sentiment", task_options={}, task_preset="smoke", task_seed=1, train_seed=2,
              model_path="m", cache_dir="c", ref_cache_dir="r", server_url="http://x/v1",
              served_model="m", train_settings=TrainSettings(report_to=("wandb",)),
              out_dir=str(tmp_path))
    worker.track(job, Result(status="scored", fitness=1.0))
    assert "experiment tracker summary failed: RuntimeError: no network" in capsys.readouterr().err
