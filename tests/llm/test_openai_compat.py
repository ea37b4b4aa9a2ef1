"""OpenAI-compatible proposers and judges, against a small in-test server that speaks the OpenAI
protocol and checks an API key (tests/openai_server.py): the structured-output field each mode
sends, a discovery generation and judge verdicts through such a server, a key that never reaches
the run directory or the LLM cache, and clear errors for a wrong or missing key or a wrong URL."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from loop_helpers import CurveEvaluator, answer
from openai_server import OpenAIServer

from selfdisco.cli import build_parser, main
from selfdisco.commands.run import resolve
from selfdisco.config import load_config
from selfdisco.discovery.interface import Services
from selfdisco.discovery.loop import Discovery, ProposerUnavailable
from selfdisco.discovery.prompt import candidate_schema
from selfdisco.errors import UserError
from selfdisco.launch.checks import check_names, check_run
from selfdisco.launch.start import open_attached_proposer, prepare_run_dir
from selfdisco.llm.backend import free_port
from selfdisco.llm.client import LLMAuthError, LLMClient
from selfdisco.llm.endpoint import open_llm
from selfdisco.losses import grammar, screen
from selfdisco.losses.catalog import catalog_entry
from selfdisco.losses.parse import parse_answer
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import EventWriter
from selfdisco.tasks.judge import Judge, verdict_schema

KEY_ENV = "SELFDISCO_TEST_API_KEY"
KEY = "sk-test-5f1e9c2a7d"
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Propose a loss."}]
GOOD = [answer("soft_mix", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
        answer("relu_margin", "1.0 * torch.relu(1 - 2.0 * x)")]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def proposer_config(url: str, structured: str, **discovery):
    return load_config("smoke", overrides={
        "server": {"proposer_source": url, "proposer_url_model": "remote-model",
                   "proposer_api_key_env": KEY_ENV, "proposer_structured": structured},
        "discovery": {"generations": 1, "candidates_per_generation": 2, "max_resamples": 2,
                      "burn_in": ["dpo"], "self_improve": False, "code_grammar": "free",
                      **discovery}})


def run_discovery(config, run_dir: Path):
    """One generation with the proposer given by the config's URL, as `selfdisco run` opens
    it; candidates scored by CurveEvaluator (no training)."""
    run_dir = prepare_run_dir(config, run_dir)
    endpoint = open_attached_proposer(config, run_dir)
    services = Services(proposer=endpoint.client, evaluator=CurveEvaluator(), screen=screen,
                        parse=lambda text: parse_answer(text, config.discovery.code_grammar),
                        catalog=catalog_entry, adapters=None,
                        task_description="a test fitness", beta=0.05)
    with endpoint:
        reason = Discovery(config, run_dir, Archive(run_dir), EventWriter(run_dir),
                           services).run()
    return reason, Archive(run_dir).rows("kind = 'proposal'")


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize(("structured", "field", "value"), [
    ("vllm", "structured_outputs", {"json": candidate_schema()}),
    ("openai", "response_format", {"type": "json_schema",
                                   "json_schema": {"name": "answer",
                                                   "schema": candidate_schema()}}),
    ("none", None, None)])
def test_each_mode_sends_its_own_structured_output_field(key, structured, field, value):
    with OpenAIServer([GOOD[0]], api_key=KEY) as server:
        client = LLMClient(server.url, "remote-model", api_key_env=KEY_ENV,
                           structured=structured)
        (completion,) = client.chat(MESSAGES, json_schema=candidate_schema(), seed=3)
    assert completion.text == GOOD[0]
    (body,) = server.bodies(CHAT)
    assert server.requests[0].authorization == f"Bearer {KEY}"
    assert body["model"] == "remote-model" and body["seed"] == 3
    sent = {"structured_outputs", "response_format"} & set(body)
    assert sent == ({field} if field else set())
    if field:
        assert body[field] == value
    if structured != "vllm":  # a plain OpenAI body: no vLLM extensions
        assert "return_token_ids" not in body and "max_completion_tokens" not in body


def test_a_discovery_generation_through_a_keyed_openai_server(key, tmp_path):
    with OpenAIServer(GOOD, api_key=KEY) as server:
        config = proposer_config(server.url, "openai")
        reason, proposals = run_discovery(config, tmp_path / "run")
    assert reason == "generation limit reached"
    assert sorted(r.name for r in proposals if r.status == "scored") == ["relu_margin",
                                                                          "soft_mix"]
    (body,) = server.bodies(CHAT)
    assert body["n"] == 2 and body["model"] == "remote-model"
    assert body["response_format"]["json_schema"]["schema"] == candidate_schema()
    assert {r.authorization for r in server.requests} == {f"Bearer {KEY}"}
    run_dir = tmp_path / "run"
    assert (run_dir / "llm").is_dir()  # the exchange is recorded...
    assert files_holding(run_dir, GOOD[0][:40])
    assert files_holding(run_dir, KEY) == []  # ...and the key is nowhere in the run
    saved = (run_dir / "config.toml").read_text()
    assert f'proposer_api_key_env = "{KEY_ENV}"' in saved


def test_mode_none_leans_on_the_parser_and_resampling(key, tmp_path):
    prose = "Here is my proposal.\n```json\n" + GOOD[1] + "\n```\nIt should train well."
    with OpenAIServer(["I would rather not.", GOOD[0], prose], api_key=KEY) as server:
        reason, proposals = run_discovery(proposer_config(server.url, "none"), tmp_path / "run")
    assert reason == "generation limit reached"
    statuses = sorted((r.status, r.name or "") for r in proposals)
    assert [s for s, _ in statuses].count("rejected") == 1
    assert {n for s, n in statuses if s == "scored"} == {"soft_mix", "relu_margin"}
    for body in server.bodies(CHAT):
        assert not {"structured_outputs", "response_format"} & set(body)


def test_the_primitives_grammar_is_re_checked_when_the_server_cannot_enforce_it(key, tmp_path):
    outside = json.dumps({"thought": "t", "name": "cubic",
                          "code": grammar.HEADER + "(x - 1.0) ** 3\n"})
    inside = [json.dumps({"thought": "t", "name": name, "code": grammar.HEADER + expr + "\n"})
              for name, expr in (("soft_exp", "0.5 * F.softplus(-1.0 * x) + "
                                              "0.5 * torch.exp(-1.0 * x)"),
                                 ("exp_only", "1.0 * torch.exp(-1.0 * x)"))]
    with OpenAIServer([outside, inside[0], inside[1]], api_key=KEY) as server:
        config = proposer_config(server.url, "openai", code_grammar="primitives")
        reason, proposals = run_discovery(config, tmp_path / "run")
    assert reason == "generation limit reached"
    rejected = [r for r in proposals if r.status == "rejected"]
    assert len(rejected) == 1 and "primitives grammar" in rejected[0].reason
    assert {r.name for r in proposals if r.status == "scored"} == {"soft_exp", "exp_only"}
    for body in server.bodies(CHAT):  # a Lark grammar has no OpenAI form: nothing is sent
        assert not {"structured_outputs", "response_format", "grammar"} & set(body)


def test_a_wrong_key_is_a_clear_error_before_any_proposal(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with OpenAIServer(GOOD, api_key=KEY) as server:
        config = proposer_config(server.url, "openai")
        with pytest.raises(UserError, match=rf"{server.url}.*HTTP 401.*{KEY_ENV}"):
            run_discovery(config, tmp_path / "run")
    assert server.bodies(CHAT) == []
    assert Archive(tmp_path / "run").rows("kind = 'proposal'") == []


def test_a_key_refused_during_a_run_stops_it_with_nothing_recorded(key, tmp_path):
    with OpenAIServer(GOOD, api_key=KEY) as server:
        config = proposer_config(server.url, "openai")
        run_dir = prepare_run_dir(config, tmp_path / "run")
        endpoint = open_attached_proposer(config, run_dir)
        server.api_key = "sk-rotated"  # the key is revoked after the run started
        services = Services(proposer=endpoint.client, evaluator=CurveEvaluator(),
                            screen=screen, parse=parse_answer, catalog=catalog_entry,
                            adapters=None, task_description="a test fitness", beta=0.05)
        with pytest.raises(ProposerUnavailable, match=KEY_ENV):
            Discovery(config, run_dir, Archive(run_dir), EventWriter(run_dir), services).run()
        endpoint.close()
    assert Archive(run_dir).rows("kind = 'proposal'") == []
    assert files_holding(run_dir, KEY) == []


def test_a_missing_key_variable_names_itself_and_the_url(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMAuthError, match=rf"{url}.*{KEY_ENV}, which is not set"):
        LLMClient(url, "m", api_key_env=KEY_ENV)
    with pytest.raises(UserError, match=KEY_ENV):
        check_run(proposer_config(url, "openai"))


def test_run_flags_reach_the_config_and_refuse_an_unset_key(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(KEY_ENV, raising=False)
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = main(["run", "--preset", "smoke", "--proposer", url, "--proposer-url-model", "m",
                 "--proposer-api-key-env", KEY_ENV, "--proposer-structured", "openai",
                 "--no-tui", "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert KEY_ENV in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_bad_mode_is_a_config_error():
    with pytest.raises(UserError, match="proposer_structured must be one of vllm, openai, none"):
        check_names(load_config("smoke", overrides={"server": {"proposer_structured": "json"}}))


def test_connection_refused_and_a_wrong_path_are_clear_errors(key):
    with pytest.raises(UserError, match="no answer from the LLM server.*URL is right"):
        open_llm(f"http://127.0.0.1:{free_port()}/v1", client_options={"retries": 0})
    with OpenAIServer(api_key=KEY) as server:
        wrong = server.url.removesuffix("/v1") + "/api"
        with pytest.raises(UserError, match="HTTP 404.*check the URL"):
            open_llm(wrong, client_options={"api_key_env": KEY_ENV})


def test_a_server_that_ignores_n_is_asked_again_for_the_rest(key):
    with OpenAIServer(["a", "b", "c"], honours_n=False) as server:
        client = LLMClient(server.url, "remote-model", structured="openai")
        texts = [c.text for c in client.chat(MESSAGES, n=3, seed=5)]
    assert texts == ["a", "b", "c"]
    assert [(b["n"], b["seed"]) for b in server.bodies(CHAT)] == [(3, 5), (2, 6), (1, 7)]


@pytest.mark.parametrize("structured", ["openai", "none"])
def test_judge_verdicts_through_a_keyed_openai_server(key, tmp_path, structured):
    replies = [json.dumps({"reasoning": "clear and correct", "rating": 7}),
               json.dumps({"reasoning": "A is better", "verdict": "A"}),
               "Having compared both, B is better. [[B]]"]
    with OpenAIServer(replies, api_key=KEY, models=("judge-model",)) as server:
        endpoint = open_llm(server.url, option="--judge", run_dir=tmp_path,
                            client_options={"api_key_env": KEY_ENV, "structured": structured})
        judge = Judge(endpoint.client, max_tokens=256)
        rating = judge.rate("q1", ["What is 2 + 2?"], ["4"], 1)
        game = judge.compare("q1", ["What is 2 + 2?"], ["4"], ["5"], 1)
        endpoint.close()
    assert rating.score == 7.0
    assert (game.first, game.second, game.outcome) == ("A", "B", "win")
    bodies = server.bodies(CHAT)
    assert [b["model"] for b in bodies] == ["judge-model"] * 3
    if structured == "openai":
        assert bodies[0]["response_format"]["json_schema"]["schema"] == verdict_schema(
            "rating", 256)
    else:
        assert not any("response_format" in b for b in bodies)
    assert files_holding(tmp_path, "clear and correct")  # recorded in the LLM cache
    assert files_holding(tmp_path, KEY) == []


def readme_blocks() -> list[str]:
    """The indented blocks of the README's section on a remote proposer, unindented."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## A remote OpenAI-compatible proposer or judge\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks, lines = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("    "):
            lines.append(line[4:])
        elif lines:
            blocks.append("\n".join(lines))
            lines = []
    return blocks


def test_the_readme_example_as_flags_and_as_a_file_gives_one_checked_config(monkeypatch,
                                                                             tmp_path):
    shell, toml = readme_blocks()
    export, command = shell.split("\n", 1)
    variable = export.split()[1].split("=")[0]
    monkeypatch.setenv(variable, KEY)
    words = shlex.split(command.replace("\\\n", " "), comments=True)
    assert words[0] == "selfdisco"
    from_flags = resolve(build_parser().parse_args(words[1:]))
    (tmp_path / "remote.toml").write_text(toml)
    from_file = load_config(file=tmp_path / "remote.toml")
    assert from_flags.to_dict() == from_file.to_dict()
    assert from_file.server.proposer_api_key_env == variable
    assert from_file.server.proposer_structured == "openai"
    check_run(from_file)  # the key variable is set: the run may start
    monkeypatch.delenv(variable)
    with pytest.raises(UserError, match=variable):
        check_run(from_file)


@pytest.mark.parametrize("url", ["https://user:sk-inurl@llm.example.com/v1",
                                 "https://llm.example.com/v1?api_key=sk-inurl"])
def test_a_key_inside_the_url_is_refused_without_echoing_it(url):
    with pytest.raises(UserError, match="api_key_env") as refused:
        check_names(load_config("smoke", overrides={"server": {"proposer_source": url}}))
    assert "sk-inurl" not in str(refused.value)
