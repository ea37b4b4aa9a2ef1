"""The resolved config.toml round-trips, whatever the task options' keys look like."""

from __future__ import annotations

import tomllib

from selfdisco.config import load_config, read_run_config
from selfdisco.launch.start import prepare_run_dir

ODD_OPTIONS = {"review column": "text", "a.b": 1, "quote\"d": "x = \"y\"",
               "nested": {"inner key": [1, 2, 3], "deeper": {"x.y": True, "z": 0.5}},
               "list of tables": [{"k": "v"}, {"k 2": "w"}]}


def test_odd_option_keys_round_trip_through_prepare_run_dir(tmp_path):
    config = load_config("smoke", overrides={"task": {"options": ODD_OPTIONS},
                                             "train": {"overrides": {"max_steps": 3}}})
    run_dir = prepare_run_dir(config, tmp_path / "run")
    back = read_run_config(run_dir)
    assert back.task.options == {"preset": "smoke", **ODD_OPTIONS}
    assert back == config


def test_to_toml_leaves_out_none_values():
    config = load_config("smoke", overrides={"task": {"options": {"keep": 1}}})
    config.task.options["gone"] = None
    data = tomllib.loads(config.to_toml())
    assert data["task"]["options"] == {"preset": "smoke", "keep": 1}
