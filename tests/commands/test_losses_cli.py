"""`selfdisco losses ...` run as a user would, through the console script."""

from __future__ import annotations

import json
import subprocess

import pytest
from console import SELFDISCO

from selfdisco.losses import catalog


def losses(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([SELFDISCO, "losses", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_clear_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 2, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_list_shows_every_entry_with_its_score():
    result = losses("list")
    assert result.returncode == 0
    for name in catalog.names():
        assert name in result.stdout
    assert "7.978" in result.stdout  # dbaql


def test_show_prints_formula_source_and_code():
    result = losses("show", "lrml_original")
    assert result.returncode == 0
    assert "sigmoid(rho)" in result.stdout and "self.beta" in result.stdout
    assert "source:" in result.stdout and "7.916" in result.stdout


def test_eval_prints_the_check_values_as_json():
    result = losses("eval", "lrml", "--beta", "0.05", "--rho", "-2.3714,0,1.4401")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rho"] == [-2.3714, 0.0, 1.4401]
    assert data["loss"] == pytest.approx([0.78592, 0.846574, 0.87829], abs=1e-5)
    assert abs(data["grad"][0]) < 1e-5 and abs(data["grad"][2]) < 1e-5  # the extrema


def test_eval_accepts_space_separated_negative_values():
    result = losses("eval", "dpo", "--rho", "-1", "2,3")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rho"] == [-1.0, 2.0, 3.0]


@pytest.mark.parametrize("args, text", [
    (("eval", "no_such_loss", "--rho", "1"), "unknown loss 'no_such_loss'"),
    (("eval", "dpo", "--rho", "1,abc"), "'abc' is not a number"),
    (("eval", "dpo", "--rho", ","), "needs at least one number"),
    (("eval", "dpo", "--rho", "1,nan"), "must be finite"),
    (("show", "missing_file.py"), "file not found"),
    (("plot", "dpo", "-o", "no_such_dir/x.png"), "does not exist"),
    (("plot", "dpo", "-o", "x.pdf"), "must name a .png file"),
    (("plot", "dpo", "--range", "5,1", "-o", "x.png"), "MIN < MAX"),
    (("plot", "dpo", "--range", "-100,10", "-o", "x.png"), "within the rho grid -60,60"),
    (("check", "missing_candidate.json"), "file not found"),
    (("check", "dpo", "--timeout", "0"), "--timeout must be a positive"),
    (("eval", "dpo", "--beta", "-1", "--rho", "1"), "--beta must be a positive number"),
    (("plot", "dpo", "--beta", "nan", "-o", "x.png"), "--beta must be a positive number"),
])
def test_bad_input_is_a_clear_error(args, text, tmp_path):
    assert_clear_error(losses(*args, cwd=tmp_path), text)


def test_eval_without_rho_is_a_usage_error():
    result = losses("eval", "dpo")
    assert result.returncode == 2 and "--rho" in result.stderr
    assert "Traceback" not in result.stderr


def test_plot_writes_a_png(tmp_path):
    output = tmp_path / "curves.png"
    result = losses("plot", "dpo", "lrml", "ipo", "--beta", "0.05", "-o", str(output))
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 10_000


def test_plot_of_a_loss_that_fails_screening_says_why(tmp_path):
    path = tmp_path / "mean_loss.py"
    path.write_text(catalog.get("dpo").candidate.code.replace(
        "return -F.logsigmoid(beta * rho)", "return -F.logsigmoid(beta * rho).mean()"))
    result = losses("plot", str(path), "-o", str(tmp_path / "x.png"))
    assert_clear_error(result, "cannot plot mean_loss: it does not pass screening: the loss "
                               "returned a scalar")
    assert not (tmp_path / "x.png").exists()


def test_check_passes_a_catalog_candidate_file(tmp_path):
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(catalog.get("cell").candidate.to_dict()))
    result = losses("check", str(path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["ok"] and verdict["name"] == "cell" and verdict["reason"] is None
    assert verdict["fingerprint"]["blocks"]
    assert verdict["shape"]["beta"] == 0.05 and len(verdict["shape"]["loss"]) == 121


def test_check_rejects_with_the_reason(tmp_path):
    path = tmp_path / "mean_loss.py"
    path.write_text(catalog.get("dpo").candidate.code.replace(
        "return -F.logsigmoid(beta * rho)", "return -F.logsigmoid(beta * rho).mean()"))
    result = losses("check", str(path))
    assert result.returncode == 1
    assert "returned a scalar" in result.stdout
    result = losses("check", str(path), "--json")
    assert result.returncode == 1
    assert "returned a scalar" in json.loads(result.stdout)["reason"]


def test_check_rejects_an_unparsable_candidate(tmp_path):
    path = tmp_path / "answer.json"
    path.write_text("I would rather not write code today.")
    result = losses("check", str(path))
    assert result.returncode == 1
    assert "No JSON object was found" in result.stdout
