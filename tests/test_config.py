import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from selfdisco.config import load_config, parse_assignment, read_run_config
from selfdisco.errors import UserError
from selfdisco.launch.checks import check_names


def test_precedence_preset_then_file_then_flags(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text("[discovery]\ngenerations = 7\ntemperature = 0.5\n"
                    "[task.options]\nmargin = 0.3\n")
    config = load_config("smoke", file, {"discovery": {"generations": 9}})
    assert config.discovery.generations == 9  # flag beats file
    assert config.discovery.temperature == 0.5  # file beats preset
    assert config.discovery.burn_in == ["dpo", "hinge"]  # preset beats defaults
    assert config.task.options == {"preset": "smoke", "margin": 0.3}  # tables merge


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    with pytest.raises(UserError, match="unknown key 'generation' in discovery"):
        load_config("smoke", overrides={"discovery": {"generation": 3}})
    with pytest.raises(UserError, match="unknown key 'nonsense'"):
        load_config("smoke", overrides={"nonsense": 1})
    with pytest.raises(UserError, match="whole number"):
        load_config("smoke", overrides={"discovery": {"generations": "many"}})
    with pytest.raises(UserError, match="unknown preset"):
        load_config("tiny")
    bad = tmp_path / "bad.toml"
    bad.write_text("[discovery\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(None, bad)
    with pytest.raises(UserError, match="does not exist"):
        load_config(None, tmp_path / "missing.toml")
    with pytest.raises(UserError, match="--proposer"):
        check_names(load_config("smoke", overrides={"server": {"proposer_source": "gpt-4"}}))


def test_resolved_config_round_trips_through_toml(tmp_path):
    config = load_config("cpu", overrides={"seed": 3, "train": {"overrides": {"max_steps": 5}}})
    (tmp_path / "config.toml").write_text(config.to_toml())
    tomllib.loads(config.to_toml())
    assert read_run_config(tmp_path) == config


def test_set_assignments_parse_toml_values():
    assert parse_assignment("discovery.generations=5") == (["discovery", "generations"], 5)
    assert parse_assignment("discovery.self_improve=false") == (["discovery", "self_improve"],
                                                                False)
    assert parse_assignment("models.policy=my/model") == (["models", "policy"], "my/model")
    with pytest.raises(UserError):
        parse_assignment("generations")


def test_self_improve_modes_and_the_older_bool(tmp_path):
    assert load_config("cpu").discovery.self_improve == "off"  # what its measurement favours
    assert load_config("smoke").discovery.self_improve == "policy"  # the class default
    for value, mode in ((True, "policy"), (False, "off"), ("proposals", "proposals")):
        config = load_config("cpu", overrides={"discovery": {"self_improve": value}})
        assert config.discovery.self_improve == mode
    # a run directory written before the modes (self_improve = false) still reads
    (tmp_path / "config.toml").write_text(
        load_config("smoke").to_toml().replace('self_improve = "policy"', "self_improve = false"))
    assert read_run_config(tmp_path).discovery.self_improve == "off"
    with pytest.raises(UserError, match="off, policy, proposals"):
        load_config("cpu", overrides={"discovery": {"self_improve": "always"}})


@pytest.mark.parametrize(("overrides", "words"), [
    ({"executor": "slurm"}, "executor 'slurm' is not known; choose one of local, ray"),
    ({"task": {"name": "imdb"}}, "task.name 'imdb' is not known; choose one of sentiment, "
                                 "mtbench, digits"),
    ({"server": {"url": "localhost:8000"}}, "server.url 'localhost:8000' is not understood"),
    ({"server": {"url": "replay:old"}}, "server.url 'replay:old' must be a server's URL"),
    ({"server": {"proposer_source": "http://host:port"}},
     "--proposer 'http://host:port': bad port"),
])
def test_names_and_sources_are_checked_against_their_registries(overrides, words):
    with pytest.raises(UserError) as err:
        check_names(load_config("smoke", overrides=overrides))
    assert words in str(err.value)


def test_executor_options_are_checked_by_the_executor():
    from selfdisco.launch.checks import check_run

    with pytest.raises(UserError, match="executor_options for the local executor.*'gpus'"):
        check_run(load_config("smoke", overrides={"executor_options": {"gpus": 1}}))
    with pytest.raises(UserError, match="cpus_per_job must be a number of 0 or more"):
        check_run(load_config("smoke", overrides={"executor": "ray",
                                                  "executor_options": {"cpus_per_job": -1}}))


def test_executor_options_round_trip(tmp_path):
    config = load_config("smoke", overrides={"executor": "ray", "executor_options": {
        "address": "auto", "gpus_per_job": 1}})
    (tmp_path / "config.toml").write_text(config.to_toml())
    assert read_run_config(tmp_path).executor_options == {"address": "auto", "gpus_per_job": 1}


def test_renamed_keys_still_work_with_a_notice(tmp_path, capsys):
    config = load_config("smoke", overrides={"server": {"proposer": "local",
                                                        "proposer_model": "m"},
                                             "train": {"preset": "smoke"}})
    assert (config.server.proposer_source, config.server.proposer_url_model,
            config.train.recipe) == ("local", "m", "smoke")
    err = capsys.readouterr().err
    assert "note: server.proposer is now server.proposer_source" in err
    assert "note: server.proposer_model is now server.proposer_url_model" in err
    assert "note: train.preset is now train.recipe" in err

    old = tmp_path / "old.toml"
    old.write_text('[train]\npreset = "cpu"\n')
    assert load_config("smoke", old).train.recipe == "cpu"
    assert f"note: train.preset is now train.recipe (in {old})" in capsys.readouterr().err

    (tmp_path / "config.toml").write_text(load_config("smoke").to_toml().replace(
        'recipe = "smoke"', 'preset = "smoke"').replace("proposer_source =", "proposer ="))
    recorded = read_run_config(tmp_path)  # a run directory is migrated without a notice
    assert (recorded.train.recipe, recorded.server.proposer_source) == ("smoke", "local")
    assert capsys.readouterr().err == ""


def test_a_run_directory_written_before_the_renames_reads():
    runs = Path(__file__).parent / "data" / "runs"
    for name in ("smoke-sentiment", "digits"):
        assert "preset = " in (runs / name / "config.toml").read_text()
        config = read_run_config(runs / name)
        assert config.train.recipe == "smoke" and config.server.proposer_source == "local"


def test_a_renamed_flag_still_works_with_a_notice():
    out = subprocess.run([sys.executable, "-m", "selfdisco", "run", "--proposer-model", "m",
                          "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "note: --proposer-model is now --proposer-url-model" in out.stderr
