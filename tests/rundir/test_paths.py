"""Run directories named by path or by run id."""

from __future__ import annotations

import pytest

from selfdisco.errors import UserError
from selfdisco.rundir.paths import resolve_run, run_ids


def make_run(root, name, files=("config.toml", "events.jsonl")):
    run = root / "checkpoints" / name
    run.mkdir(parents=True)
    for file in files:
        (run / file).write_text("")
    return run


def test_resolve_run_by_path_and_by_id(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    run = make_run(tmp_path, "sentiment-2026")
    assert resolve_run(run) == run.resolve()
    assert resolve_run("sentiment-2026") == run.resolve()
    assert resolve_run(str(run), required="events.jsonl") == run.resolve()
    assert run_ids() == ["sentiment-2026"]


def test_resolve_run_names_near_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    make_run(tmp_path, "sentiment-2026")
    make_run(tmp_path, "digits-7")
    (tmp_path / "checkpoints" / "models").mkdir()  # not a run: never suggested
    with pytest.raises(UserError, match="no run directory 'sentiment-2025'.*did you mean: "
                                        "sentiment-2026$"):
        resolve_run("sentiment-2025")
    with pytest.raises(UserError, match="did you mean: digits-7"):
        resolve_run("digits")
    with pytest.raises(UserError) as err:
        resolve_run("zzz")
    assert "did you mean" not in str(err.value)


def test_resolve_run_needs_the_required_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    empty = make_run(tmp_path, "empty-run", files=())
    with pytest.raises(UserError, match="has no config.toml"):
        resolve_run("empty-run")
    (empty / "config.toml").write_text("")
    with pytest.raises(UserError, match="has no events.jsonl"):
        resolve_run(empty, required="events.jsonl")


def test_report_and_resume_take_a_run_id(tmp_path, monkeypatch, capsys):
    from selfdisco.cli import main

    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    make_run(tmp_path, "sentiment-2026")
    for command in ("report", "resume"):
        assert main([command, "sentiment-2025"]) == 2
        assert "did you mean: sentiment-2026" in capsys.readouterr().err
    assert main(["report", "sentiment-2026"]) == 2  # found, but it has no archive yet
    assert "has no archive.sqlite" in capsys.readouterr().err


def test_a_replay_names_its_run_by_id(tmp_path, monkeypatch, capsys):
    from selfdisco.cli import build_parser, main
    from selfdisco.commands.run import resolve
    from selfdisco.config import load_config

    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    recorded = make_run(tmp_path, "smoke-run", files=())
    (recorded / "config.toml").write_text(load_config("smoke").to_toml())
    config = resolve(build_parser().parse_args(["run", "--proposer", "replay:smoke-run"]))
    assert config.server.proposer_source == f"replay:{recorded.resolve()}"
    assert config.preset == "smoke"  # the recorded run's own config
    assert main(["run", "--no-tui", "--proposer", "replay:smoke-rn"]) == 2
    assert "did you mean: smoke-run" in capsys.readouterr().err
