"""Tokens per second for proposing candidates: vLLM against transformers' generate.

Both sample n answers (default 8) to the same proposal prompt (the real system prompt and burn-in
from prompts/) with the same max_tokens, temperature and top_p. vLLM is timed with the answer
format of --grammar enforced (as a run asks) and without it (like for like with transformers,
which has no constraint). Tokens are the generated tokens up to and including the end-of-text token.

    python scripts/bench_propose.py [--model smollm2-135m-instruct] [--n 8] [--max-tokens 384]
                                    [--dtype auto]

vLLM serves in --dtype (auto: float32 on CPU, as a run does); transformers runs in float32.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def proposal_messages(grammar: str, beta: float) -> list[dict]:
    from selfdisco.discovery import prompt
    from selfdisco.losses import catalog
    from selfdisco.tasks import get_task

    description = f"Fitness here is the {get_task('sentiment').description}; higher is better."
    rows = [{"name": e.name, "full_name": e.full_name, "fitness": e.paper_score,
             "code": e.candidate.code} for e in map(catalog.get, ("dpo", "hinge", "ipo"))]
    return [{"role": "system", "content": prompt.system_prompt(description, beta, grammar)},
            {"role": "user", "content": prompt.burn_in_message(rows)}]


def bench_vllm(model_path: str, messages: list[dict], args, constraint: dict) -> list[str]:
    from selfdisco.llm.protocol import parse_json_answer
    from selfdisco.llm.server import VLLMServer

    log = Path(tempfile.mkdtemp(prefix="bench-propose-")) / "server.log"
    lines = []
    started = time.monotonic()
    with VLLMServer(model_path, log_path=log, dtype=args.dtype) as server:
        lines.append(f"vLLM ({server.dtype}) start-up: {time.monotonic() - started:.1f} s "
                     f"(log {log})")
        client = server.client()
        client.chat(messages, n=1, max_tokens=8, seed=0)  # warm-up
        for label, options in ((args.grammar, constraint), ("free text", {})):
            started = time.monotonic()
            answers = client.chat(messages, n=args.n, max_tokens=args.max_tokens,
                                  temperature=args.temperature, top_p=args.top_p,
                                  seed=args.seed, **options)
            seconds = time.monotonic() - started
            tokens = sum(len(a.token_ids) for a in answers)
            note = ""
            if options:
                parsed = 0
                for answer in answers:
                    try:
                        parsed += isinstance(parse_json_answer(answer.text), dict)
                    except ValueError:
                        pass
                note = f", {parsed}/{args.n} answers parse as JSON"
            lines.append(f"vLLM {server.dtype}, {label}: {tokens} tokens in {seconds:.1f} s = "
                         f"{tokens / seconds:.1f} tokens/s{note}")
    return lines


def bench_transformers(model_path: str, messages: list[dict], args) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    eos = tokenizer.eos_token_id
    torch.manual_seed(args.seed)
    with torch.no_grad():
        model.generate(**prompt, max_new_tokens=8, do_sample=False)  # warm-up
        started = time.monotonic()
        output = model.generate(**prompt, do_sample=True, temperature=args.temperature,
                                top_p=args.top_p, max_new_tokens=args.max_tokens,
                                num_return_sequences=args.n, pad_token_id=eos)
        seconds = time.monotonic() - started
    new = output[:, prompt["input_ids"].shape[1]:].tolist()
    tokens = sum(row.index(eos) + 1 if eos in row else len(row) for row in new)
    return [f"transformers float32 generate (batch of {args.n}, {torch.get_num_threads()} "
            f"threads): {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grammar", choices=["free", "primitives"], default="free",
                        help="the proposer's code grammar (the cpu preset uses primitives)")
    parser.add_argument("--dtype", default="auto",
                        help="what vLLM serves in: auto (float32 on CPU), float32, bfloat16")
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()

    from selfdisco.discovery.prompt import answer_format
    from selfdisco.llm.models import resolve_model

    model_path = resolve_model(args.model)
    messages = proposal_messages(args.grammar, beta=0.1)
    print(f"model {args.model}; n={args.n}, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, top_p={args.top_p}, seed={args.seed}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_vllm:
        for line in bench_vllm(model_path, messages, args, answer_format(args.grammar)):
            print(line, flush=True)
    if not args.skip_transformers:
        for line in bench_transformers(model_path, messages, args):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
