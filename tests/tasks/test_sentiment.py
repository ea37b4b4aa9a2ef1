"""sentiment: openings, scorers, preference pairs and their cache (no server needed here)."""

from __future__ import annotations

import json
import math

import pytest

from selfdisco.errors import UserError
from selfdisco.llm.protocol import Completion
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.openings import dataset_openings, split_openings, template_openings
from selfdisco.tasks.sampling import Sample
from selfdisco.tasks.scorers import make_scorer, positive_label_index, scorer_label
from selfdisco.tasks.sentiment import PRESET_SETTINGS, kl_regularised, kl_subset, make_pairs


def test_openings_are_many_distinct_short_and_split_the_same_way_every_time():
    groups = template_openings()
    split = split_openings(groups, seed=0)
    everything = split.train + split.held_out
    assert len(set(everything)) == len(everything) >= 200
    assert not set(split.train) & set(split.held_out)
    assert all(2 <= len(text.split()) <= 12 for text in everything)
    assert split_openings(template_openings(), seed=0) == split
    assert split_openings(groups, seed=1).held_out != split.held_out
    # Every template is represented among the first held-out openings the cpu preset uses.
    first = split.held_out[:len(groups)]
    assert len({_template_of(text, groups) for text in first}) == len(groups)
    assert len(split.held_out) >= PRESET_SETTINGS["cpu"].eval_prompts
    assert len(split.train) >= PRESET_SETTINGS["cpu"].train_prompts


def _template_of(text: str, groups: list[list[str]]) -> int:
    return next(i for i, group in enumerate(groups) if text in group)


def test_openings_from_a_local_review_file(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    lines = [{"review": f"Review number {i} <br /><br />was quite something to watch, really."}
             for i in range(30)]
    reviews.write_text("".join(json.dumps(line) + "\n" for line in lines))
    split = dataset_openings(str(reviews), column="review", words=4)
    assert len(split.train) + len(split.held_out) == 30
    assert "Review number 3 was" in split.train + split.held_out
    with pytest.raises(UserError, match=r"missing column\(s\) text \(its columns: review\); "
                                        "the task option review_column"):
        dataset_openings(str(reviews))
    with pytest.raises(UserError, match="review data must be a .jsonl"):
        dataset_openings(str(tmp_path))


def test_vader_rewards_positive_text_and_labels_itself():
    scorer = make_scorer("vader")
    good, bad, flat = scorer.score(["a wonderful, moving film", "a dull and awful mess",
                                    "the film is about a man"])
    assert good > 0.5 and bad < -0.5 and flat == 0.0
    assert "vader" in scorer.label and scorer.label == scorer_label("vader")
    with pytest.raises(UserError, match="unknown sentiment scorer"):
        make_scorer("textblob")


def test_classifier_scorer_reads_the_positive_probability(tmp_path):
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    scorer = make_scorer(f"hf:{tmp_path / 'clf'}")
    scores = scorer.score(["good", "bad", "good good bad"])
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1
    assert scorer.label.startswith("hf:") and "P(positive)" in scorer.label
    assert positive_label_index({0: "neg", 1: "pos"}) == 1
    assert positive_label_index({"0": "POSITIVE", "1": "NEGATIVE"}) == 0
    with pytest.raises(UserError, match="no positive class"):
        positive_label_index({0: "joy", 1: "anger", 2: "fear"})
    with pytest.raises(UserError, match="could not load"):
        make_scorer(f"hf:{tmp_path / 'missing'}")


def test_pairs_are_best_versus_worst_above_the_margin():
    samples = [Sample(0, "wonderful", [1], None, "length"), Sample(0, "awful", [2], None, "stop"),
               Sample(0, "fine", [3], None, "stop"),
               Sample(1, "ok", [1], None, "stop"), Sample(1, "okay", [2], None, "stop")]
    rewards = [0.9, -0.8, 0.2, 0.1, 0.2]
    pairs = make_pairs(["first", "second"], samples, rewards, margin=0.3)
    assert pairs == [{"prompt": "first", "chosen": "wonderful", "rejected": "awful",
                      "score_chosen": 0.9, "score_rejected": -0.8}]
    everything = make_pairs(["first", "second"], samples, rewards, margin=-1.0)
    assert [p["prompt"] for p in everything] == ["first", "second"]
    assert everything[1]["chosen"] == "okay" and everything[1]["rejected"] == "ok"


class ScriptedLLM:
    """Stands in for the reference policy only: continues every opening with fixed texts."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.calls = 0

    def complete(self, prompt, *, n, seed, **options):
        self.calls += 1
        return [Completion(text=self.texts[(seed + i) % len(self.texts)], finish_reason="length",
                           token_ids=[1, 2, 3]) for i in range(n)]


def test_preference_data_is_made_once_and_then_read_from_the_cache(tmp_path):
    task = get_task("sentiment")
    client = ScriptedLLM([" a wonderful, moving story.", " a dull and awful mess.",
                          " about a man and his dog."])
    options = {"train_prompts": "12", "pair_samples": "3", "concurrency": "2"}
    ctx = TaskContext(client=client, model_path="some/model", cache_dir=tmp_path, options=options)
    pairs = task.preference_data(ctx)
    assert len(pairs) == 12 and client.calls == 12
    assert all(p["chosen"] == " a wonderful, moving story." for p in pairs)
    assert all(p["rejected"] == " a dull and awful mess." for p in pairs)
    cached = task.preference_data(TaskContext(client=None, model_path="some/model",
                                              cache_dir=tmp_path, options=options))
    assert cached == pairs
    files = list((tmp_path / "sentiment").glob("pairs-*.json"))
    assert json.loads(files[0].read_text())["scorer"] == "vader compound [-1, 1]"
    # A change in anything the pairs depend on is a different cache entry.
    other = TaskContext(client=client, model_path="other/model", cache_dir=tmp_path,
                        options=options)
    task.preference_data(other)
    assert client.calls == 24


def test_no_pair_above_the_margin_is_a_clear_error(tmp_path):
    client = ScriptedLLM([" about a man.", " about a dog."])
    ctx = TaskContext(client=client, model_path="m", cache_dir=tmp_path,
                      options={"train_prompts": "4", "pair_samples": "2"})
    with pytest.raises(UserError, match="margin"):
        get_task("sentiment").preference_data(ctx)


def test_settings_come_from_the_preset_and_options():
    task = get_task("sentiment")
    smoke = task.settings(TaskContext(preset="smoke"))
    assert smoke.eval_prompts < PRESET_SETTINGS["cpu"].eval_prompts
    assert task.settings(TaskContext(options={"preset": "smoke"})) == smoke
    tuned = task.settings(TaskContext(options={"eval_prompts": "10", "measure_kl": "false",
                                               "kl_budget": "0"}))
    assert tuned.eval_prompts == 10 and tuned.measure_kl is False and tuned.kl_budget == 0
    with pytest.raises(UserError, match="unknown preset"):
        task.settings(TaskContext(preset="tpu"))
    with pytest.raises(UserError, match="unknown task option"):
        task.settings(TaskContext(options={"eval_prompt": "10"}))
    train = task.train_settings("smoke")
    assert train.max_length <= 64


def test_evaluate_needs_a_client_and_an_existing_adapter(tmp_path):
    task = get_task("sentiment")
    with pytest.raises(ValueError, match="LLM client"):
        task.score(TaskContext())
    ctx = TaskContext(client=ScriptedLLM(["x"]), model_path="m", cache_dir=tmp_path)
    with pytest.raises(UserError, match="adapter directory not found"):
        task.score(ctx, adapter_path=str(tmp_path / "nope"))


def test_kl_is_estimated_from_one_sample_per_opening_first():
    samples = [Sample(p, f"{p}-{k}", [1], None, "stop") for p in range(3) for k in range(2)]
    assert [s.text for s in kl_subset(samples, 4)] == ["0-0", "1-0", "2-0", "0-1"]
    assert kl_subset(samples, 0) == samples and kl_subset(samples, 99) == samples


def test_kl_budget_and_weight_are_checked_and_need_the_kl_measured():
    task = get_task("sentiment")
    cpu = task.settings(TaskContext())
    assert cpu.kl_budget == 6.0 and cpu.kl_weight == 0
    assert task.settings(TaskContext(preset="smoke")).kl_budget == 0
    with pytest.raises(UserError, match="kl_weight must be 0 or more"):
        task.check_options("cpu", {"kl_weight": -0.1, "kl_budget": 0})
    with pytest.raises(UserError, match="kl_budget must be 0"):
        task.check_options("cpu", {"kl_budget": -1})
    with pytest.raises(UserError, match="two different fitnesses"):
        task.check_options("cpu", {"kl_weight": 0.02})
    with pytest.raises(UserError, match="set kl_budget = 0 and kl_weight = 0"):
        task.check_options("cpu", {"measure_kl": False})
    task.check_options("cpu", {"measure_kl": False, "kl_budget": 0})


def test_fitness_is_reward_minus_weighted_kl_computed_per_prompt():
    rewards = [[0.5, 0.7], [0.1, 0.3], [0.9, 0.9]]
    kls = [[10.0], [2.0], [6.0]]
    value, stderr, method, per_prompt = kl_regularised(rewards, kls, 0.02)
    assert method == "per prompt"
    assert per_prompt == pytest.approx([0.6 - 0.2, 0.2 - 0.04, 0.9 - 0.12])
    assert value == pytest.approx(sum(per_prompt) / 3)
    mean = value
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_prompt) / 2)
    assert stderr == pytest.approx(sd / math.sqrt(3))
    # The reference itself: KL exactly 0, so the fitness is the reward.
    base = kl_regularised(rewards, [[0.0]] * 3, 0.02)
    assert base[0] == pytest.approx((0.6 + 0.2 + 0.9) / 3) and base[2] == "per prompt"
    # Weight 0: the raw reward, whatever the KL.
    assert kl_regularised(rewards, [[], [], []], 0.0)[0] == pytest.approx(base[0])


def test_a_bigger_drift_does_not_win_on_its_own():
    """The cpu run's figures: dpo (0.62 at KL 11) against a loss with 0.55 at KL 5.8 and the
    untrained base; more drift for a little more reward loses, and a loss that drifts without
    gaining reward scores below the base."""
    prompts = 32

    def score(reward, kl):
        return kl_regularised([[reward, reward]] * prompts, [[kl]] * prompts, 0.02)[0]

    dpo, frugal, base = score(0.62, 11.0), score(0.55, 5.8), score(0.15, 0.0)
    assert frugal > dpo > base
    assert score(0.15, 5.0) < base
    assert score(0.62, 30.0) < dpo


def test_uneven_kl_samples_add_the_two_standard_errors():
    rewards = [[0.5, 0.7], [0.1, 0.3], [0.9, 0.9], [0.2, 0.4]]
    kls = [[10.0, 12.0], [2.0], [6.0], [4.0]]
    value, stderr, method, per_prompt = kl_regularised(rewards, kls, 0.02)
    assert method == "sum of errors" and per_prompt == []
    reward = [0.6, 0.2, 0.9, 0.3]
    kl = [10.0, 12.0, 2.0, 6.0, 4.0]
    assert value == pytest.approx(sum(reward) / 4 - 0.02 * sum(kl) / 5)
    assert stderr == pytest.approx(_stderr(reward) + 0.02 * _stderr(kl))
    # No KL measured for a policy that needs one: no value.
    assert math.isnan(kl_regularised(rewards, [[], [], [], []], 0.02)[0])


def _stderr(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def test_the_base_models_fitness_is_its_reward_with_reward_and_kl_beside_it(tmp_path):
    client = ScriptedLLM([" a wonderful, moving story.", " a dull and awful mess."])
    ctx = TaskContext(client=client, model_path="m", cache_dir=tmp_path,
                      options={"eval_prompts": "6", "eval_samples": "2", "concurrency": "1"})
    fitness = get_task("sentiment").score(ctx)
    metrics = fitness.metrics
    assert fitness.n == 6 and metrics["kl"] == 0.0 and metrics["kl_stderr"] == 0.0
    assert fitness.value == pytest.approx(metrics["reward"])
    assert fitness.stderr == pytest.approx(metrics["reward_stderr"])
    assert metrics["kl_budget"] == 6.0 and metrics["fitness_stderr"] == "per prompt"
    assert len(metrics["per_prompt"]) == 6 and "budget_rule" not in metrics


class SeedRecordingLLM(ScriptedLLM):
    """ScriptedLLM that also records each request's (opening, seed)."""

    def __init__(self, texts: list[str]):
        super().__init__(texts)
        self.requests: list[tuple[str, int]] = []

    def complete(self, prompt, *, n, seed, **options):
        self.requests.append((prompt, seed))
        return super().complete(prompt, n=n, seed=seed, **options)


def test_unused_openings_follow_the_searchs_and_draw_with_their_own_seed(tmp_path):
    task = get_task("sentiment")
    options = {"eval_prompts": "6", "eval_samples": "1", "concurrency": "1"}
    settings = task.settings(TaskContext(options=options))
    search, start = task.scored_prompts(settings)
    unused, first = task.scored_prompts(
        task.settings(TaskContext(options={**options, "prompt_set": "unused",
                                           "heldout_prompts": "9"})))
    held_out = task.openings(settings).held_out
    assert (start, first) == (0, 6) and search == held_out[:6] and unused == held_out[6:15]

    def sampled(more):
        client = SeedRecordingLLM([" a wonderful film."])
        ctx = TaskContext(client=client, model_path="m", cache_dir=tmp_path, seed=11,
                          options={**options, **more})
        return client.requests, task.score(ctx).metrics

    before, metrics = sampled({})
    after, held = sampled({"prompt_set": "unused", "sampling_seed": "5"})
    assert not {p for p, _ in before} & {p for p, _ in after}
    assert not {s for _, s in before} & {s for _, s in after}
    assert (metrics["prompt_set"], metrics["sampling_seed"]) == ("search", 11)
    assert (held["prompt_set"], held["first_prompt"], held["sampling_seed"]) == ("unused", 6, 5)
    task.check_options("cpu", {"prompt_set": "unused", "sampling_seed": 5})
    with pytest.raises(UserError, match="prompt_set must be search or unused"):
        task.check_options("cpu", {"prompt_set": "fresh"})
    with pytest.raises(UserError, match="too few unused openings"):
        task.scored_prompts(task.settings(TaskContext(options={
            "prompt_set": "unused", "eval_prompts": "150"})))


def test_a_run_scored_by_an_earlier_version_keeps_its_fitness_version():
    task = get_task("sentiment")
    assert task.recorded_options({}, []) == {"fitness_version": 2}
    assert task.recorded_options({}, [{"fitness_version": 2, "kl": 3.0}]) == {
        "fitness_version": 2}
    assert task.recorded_options({}, [{"fitness_version": 2}, {"kl": 3.0}]) == {
        "fitness_version": 1}
    assert task.recorded_options({"fitness_version": "2"}, [{"kl": 3.0}]) == {
        "fitness_version": 2}
    with pytest.raises(UserError, match="fitness_version must be 1 or 2"):
        task.check_options("cpu", {"fitness_version": 3})
    chosen, _, _ = task.heldout_options("cpu", {}, unused=True, sampling_seed=5, count=None,
                                        recorded=[{"kl": 3.0}])
    assert chosen["fitness_version"] == 1
