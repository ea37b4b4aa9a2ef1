"""The replay cache: recording, answering in order, and clear errors (no server)."""

from __future__ import annotations

import json
import threading

import pytest

from selfdisco.errors import UserError
from selfdisco.llm.cache import CACHE_FILE, AnswerBook, Recorder, read_entries
from selfdisco.llm.protocol import CHAT, Completion, build_request
from selfdisco.llm.replay import ReplayClient

MESSAGES = [{"role": "user", "content": "Propose a loss."}]


def record(recorder: Recorder, text: str, **options) -> list[Completion]:
    request = build_request(CHAT, messages=MESSAGES, **options)
    completions = [Completion(f"{text}-{i}", "stop", [i], None) for i in range(request["n"])]
    recorder.record(request, completions, elapsed_s=0.1)
    return completions


def test_replay_returns_recorded_answers_in_order(tmp_path):
    recorder = Recorder(tmp_path / "llm")
    first = record(recorder, "first", n=2, seed=7)
    second = record(recorder, "second", n=2, seed=7)
    other = record(recorder, "other", n=1, seed=8)
    client = ReplayClient(tmp_path)
    assert client.chat(MESSAGES, n=1, seed=8) == other
    assert client.chat(MESSAGES, n=2, seed=7) == first
    assert client.chat(MESSAGES, n=2, seed=7) == second


def test_replay_error_names_a_request_not_in_the_cache(tmp_path):
    record(Recorder(tmp_path / "llm"), "x", n=2, seed=7)
    client = ReplayClient(tmp_path)
    with pytest.raises(UserError, match=r"no recorded answer for chat.*Propose a loss.*seed=9"):
        client.chat(MESSAGES, n=2, seed=9)


def test_replay_error_when_asked_more_often_than_recorded(tmp_path):
    record(Recorder(tmp_path / "llm"), "x", seed=1)
    client = ReplayClient(tmp_path)
    client.chat(MESSAGES, seed=1)
    with pytest.raises(UserError, match="recorded 1 time"):
        client.chat(MESSAGES, seed=1)


def test_replay_of_a_directory_without_a_cache_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no replay cache"):
        ReplayClient(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        ReplayClient(tmp_path / "missing")


def test_replayed_run_records_its_own_cache(tmp_path):
    recorded = record(Recorder(tmp_path / "old" / "llm"), "x", seed=1)
    client = ReplayClient(tmp_path / "old", recorder=Recorder(tmp_path / "new" / "llm"))
    client.chat(MESSAGES, seed=1)
    assert ReplayClient(tmp_path / "new").chat(MESSAGES, seed=1) == recorded


def test_torn_last_line_is_skipped(tmp_path):
    recorder = Recorder(tmp_path / "llm")
    record(recorder, "x", seed=1)
    with open(recorder.path, "a") as handle:
        handle.write('{"key": "abc", "kind": "chat", "completi')
    assert len(read_entries(tmp_path / "llm")) == 1
    assert len(AnswerBook(tmp_path / "llm")) == 1


def test_entries_carry_sampling_options_seed_and_adapter_events(tmp_path):
    recorder = Recorder(tmp_path / "llm")
    record(recorder, "x", n=3, seed=5, temperature=0.7)
    recorder.record_adapter("load_adapter", "gen1", "/adapters/gen1")
    lines = [json.loads(line) for line in (tmp_path / "llm" / CACHE_FILE).read_text().splitlines()]
    assert lines[0]["request"]["seed"] == 5 and lines[0]["request"]["temperature"] == 0.7
    assert lines[0]["request"]["n"] == 3 and len(lines[0]["completions"]) == 3
    assert lines[1] == {**lines[1], "kind": "load_adapter", "name": "gen1"}


def test_recorder_is_safe_across_threads(tmp_path):
    recorder = Recorder(tmp_path / "llm")

    def work(seed: int) -> None:
        for _ in range(20):
            record(recorder, str(seed), seed=seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_entries(tmp_path / "llm")) == 160
    client = ReplayClient(tmp_path)
    for _ in range(20):
        assert client.chat(MESSAGES, seed=3)[0].text == "3-0"
