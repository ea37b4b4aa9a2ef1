"""--json on every command that prints results: each prints strict JSON on stdout and nothing
else there, through one printer (formatting.print_json)."""

from __future__ import annotations

import argparse
import json
import subprocess

from console import SELFDISCO
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.cli import build_parser, main
from selfdisco.formatting import json_text

# Commands that stream progress or hand over a terminal instead of printing a result.
NO_RESULT = {"run", "resume", "serve", "tui", "losses plot", "config example"}
ALWAYS_JSON = {"losses eval"}


def leaf_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict:
    """'losses show' -> its parser, for every command and sub-action."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    out = {}
    for name, sub in subs[0].choices.items():
        out.update(leaf_parsers(sub, f"{prefix} {name}".strip()))
    return out


def test_every_command_that_prints_results_has_json():
    leaves = leaf_parsers(build_parser())
    missing = [name for name, parser in leaves.items() if name not in NO_RESULT | ALWAYS_JSON
               and "--json" not in parser._option_string_actions]
    assert not missing, f"add --json to: {missing}"


def test_json_text_is_strict():
    text = json_text({"nan": float("nan"), "inf": [float("inf")], "path": SELFDISCO})
    assert json.loads(text) == {"nan": None, "inf": [None], "path": SELFDISCO}


def test_losses_list_and_show(capsys):
    assert main(["losses", "list", "--json"]) == 0
    names = [entry["name"] for entry in json.loads(capsys.readouterr().out)]
    assert "dpo" in names and "lrml" in names
    assert main(["losses", "show", "lrml", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "lrml" and "def " in shown["code"] and shown["formula"]


def test_models(capsys):
    assert main(["models", "--json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"smoke-llama", "smollm2-135m-instruct"} <= set(models)
    assert isinstance(models["smoke-llama"]["ready"], bool)


def test_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    run = tmp_path / "checkpoints" / "json-run"
    make_loop(run, ScriptedProposer([answer("steeper", "1.0 * F.softplus(-3.0 * x)")] * 4),
              CurveEvaluator(), generations=1).run()
    assert main(["report", "json-run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run"] == "json-run" and result["report"] == str(run.resolve() / "report.md")
    fitness = [row["fitness"] for row in result["ranking"]]
    assert fitness == sorted(fitness, reverse=True) and len(fitness) >= 3
    assert sum(row["tied_with_best"] for row in result["ranking"]) >= 1


def test_eval_digits_as_a_console_script():
    result = subprocess.run([SELFDISCO, "eval", "--task", "digits", "--option", "epochs=1",
                             "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fitness = json.loads(result.stdout)
    assert fitness["task"] == "digits" and 0 <= fitness["value"] <= 1
