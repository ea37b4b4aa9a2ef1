"""Named starting points for a run's configuration (see config.py for every field).

PRESETS is the one list of preset names and each preset's policy model (models.policy); tables
keyed by preset elsewhere (each task's settings and training recipes) are built with per_preset.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

DEFAULT_PRESET = "cpu"

# What the paper-scale presets share: its discovery task and data, and a GPU-sized search.
PAPER_TASK = {"name": "mtbench", "options": {"data": "argilla/dpo-mix-7k"}}
PAPER_DISCOVERY = {"generations": 25, "candidates_per_generation": 4, "code_grammar": "free",
                   "max_tokens": 1024, "candidate_timeout_min": 90.0,
                   # the four baselines on 3 shared seeds: the loss-by-seed interaction, 6 df
                   "baseline_seeds": 3}

PRESETS: dict[str, dict] = {
    # SmolLM2-135M-Instruct as policy and proposer, the sentiment task, vLLM on CPU.
    "cpu": {
        "models": {"policy": "smollm2-135m-instruct"},
        # Lighter than the task's own cpu recipe (32 steps, 64 x 4 samples) so that a
        # generation of two candidates fits in about three minutes on two cores. KL comes from
        # all 64 samples (the task's kl_samples = 0).
        "task": {"name": "sentiment",
                 "options": {"eval_prompts": 32, "eval_samples": 2}},
        "discovery": {
            "generations": 3,
            "candidates_per_generation": 2,
            # A 135M proposer rarely writes valid free-form code: constrain it to the grammar
            # over generic primitives (losses/grammar.py), in which every loss trains.
            "code_grammar": "primitives",
            "max_tokens": 384,
            # Measured over 4 generations per mode (seed 0, primitives): after generation 1,
            # valid and novel off 1/22, policy 1/22 (the same run), proposals 3/15 (Fisher's
            # p 0.28), no fitness difference beyond noise; free code 0/32 in every mode. No mode
            # beats off, and off costs least (proposals adds a proposer training per generation).
            "self_improve": "off",
            # dpo and three baselines on 2 shared seeds: the loss-by-seed interaction with 3 df
            # for 4 more trainings (about 7 minutes, cached across runs) rather than 6 df for 8.
            "baseline_seeds": 2,
        },
        "train": {"recipe": "cpu", "overrides": {"max_steps": 16}},
    },
    # A tiny random Llama: the whole loop in about a minute, for tests and a first try.
    "smoke": {
        "models": {"policy": "smoke-llama"},
        "task": {"name": "sentiment", "options": {"preset": "smoke"}},
        "discovery": {
            "generations": 2,
            "candidates_per_generation": 2,
            "burn_in": ["dpo", "hinge"],
            "baseline_seeds": 2,
            "code_grammar": "primitives",
            "max_tokens": 600,
            "candidate_timeout_min": 5.0,
            # The random model's duel exercises the path, it decides nothing: 8 answers a side
            # (a win takes 5 or more discordant ones) keep it to seconds, where 32 would add
            # about half a minute of answers and screening to the minute-long run.
            "duel_samples": 8,
        },
        "train": {"recipe": "smoke"},
        "server": {"max_model_len": 8192},
    },
    # The paper's recipe with open models: zephyr-7b-gemma-sft policy on dpo-mix-7k, beta 0.05,
    # an open proposer and judge. Needs a large GPU and access to the Hugging Face Hub.
    "gpu-zephyr": {
        "models": {
            "policy": "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1",
            "proposer": "Qwen/Qwen2.5-Coder-7B-Instruct",
            "judge": "Qwen/Qwen2.5-7B-Instruct",
        },
        "task": PAPER_TASK,
        "discovery": {**PAPER_DISCOVERY, "self_improve": "off"},  # the proposer is another model
        "train": {"recipe": "gpu-zephyr"},
        "server": {"max_model_len": 8192, "kv_cache_gib": 0},
    },
    # Self-improvement at the paper's scale: an instruct model that writes code is both the policy
    # and the proposer, so the best adapter becomes the next proposer. The paper's data and beta,
    # LoRA. The judge is of another family (IBM Granite, not Qwen), so it does not favour its own
    # family's answers; Apache-2.0 and not gated, it downloads without a Hub token or a licence
    # to accept. Needs a large GPU and access to the Hugging Face Hub.
    "gpu-selfimprove": {
        "models": {
            "policy": "Qwen/Qwen2.5-7B-Instruct",
            "judge": "ibm-granite/granite-3.1-8b-instruct",
        },
        "task": PAPER_TASK,
        "discovery": {**PAPER_DISCOVERY, "self_improve": "policy"},
        "train": {"recipe": "gpu-selfimprove"},
        "server": {"max_model_len": 8192, "kv_cache_gib": 0},
    },
}

# A preset that runs at another preset's scale takes that preset's row in every table keyed by
# preset: the self-improving preset samples, scores and trains as the zephyr one does.
SAME_SCALE_AS = {"gpu-selfimprove": "gpu-zephyr"}


def per_preset(rows: dict[str, T]) -> dict[str, T]:
    """A table keyed by preset name, in PRESETS order: `rows`, and for a preset in SAME_SCALE_AS
    without its own row, its scale's row.

    Raises:
        ValueError: a row is keyed by a name that is no preset (a typo in a table).
    """
    unknown = sorted(set(rows) - set(PRESETS))
    if unknown:
        raise ValueError(f"no preset named {', '.join(unknown)}; presets: {', '.join(PRESETS)}")
    table = {}
    for name in PRESETS:
        source = name if name in rows else SAME_SCALE_AS.get(name)
        if source in rows:
            table[name] = rows[source]
    return table
