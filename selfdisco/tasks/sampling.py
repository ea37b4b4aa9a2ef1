"""Sampling raw completions (no chat template) through vLLM, many requests in flight."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.progress import Progress

# Concurrent requests: vLLM batches them (about 7x the throughput of one stream on 2 cores).
DEFAULT_CONCURRENCY = 8


@dataclass
class Sample:
    prompt_index: int
    text: str
    token_ids: list[int]
    token_logprobs: list[float] | None
    finish_reason: str | None
    prompt_token_ids: list[int] | None = None


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any],
                 concurrency: int = DEFAULT_CONCURRENCY, label: str = "requests",
                 unit: str = "") -> list[Any]:
    """fn over items with up to `concurrency` requests in flight; results in input order.
    Progress (`label: n of N unit`) goes to stderr when it takes more than a few seconds."""
    with Progress(label, total=len(items), unit=unit) as progress:
        def counted(item: Any) -> Any:
            result = fn(item)
            progress.advance()
            return result

        if concurrency <= 1 or len(items) <= 1:
            return [counted(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
            return list(pool.map(counted, items))


def sample_completions(client: Any, prompts: Sequence[str], *, n: int, max_tokens: int,
                       seed: int, model: str | None = None, logprobs: bool = False,
                       temperature: float = 1.0, top_p: float = 1.0,
                       concurrency: int = DEFAULT_CONCURRENCY) -> list[Sample]:
    """n raw completions (no chat template) per prompt.

    Prompt i is sampled with seed + i * n (vLLM gives its k-th sample seed + i * n + k), so no
    two samples share a seed.
    """

    def one(index: int) -> list[Sample]:
        completions = client.complete(prompts[index], n=n, temperature=temperature, top_p=top_p,
                                      max_tokens=max_tokens, seed=seed + index * n, model=model,
                                      logprobs=logprobs)
        return [Sample(index, c.text, list(c.token_ids or []),
                       list(c.token_logprobs) if c.token_logprobs is not None else None,
                       c.finish_reason, c.prompt_token_ids) for c in completions]

    groups = parallel_map(one, list(range(len(prompts))), concurrency,
                          label=f"sampling {n} per prompt", unit="prompts")
    return [sample for group in groups for sample in group]


def adapter_name(adapter_path: str | Path) -> str:
    """A stable served name for an adapter directory."""
    resolved = str(Path(adapter_path).expanduser().resolve())
    return "adapter-" + hashlib.sha1(resolved.encode()).hexdigest()[:12]


@contextmanager
def served_adapter(client: Any, adapter_path: str | Path | None) -> Iterator[str | None]:
    """The served model name of `adapter_path` (loaded for the block), or None for the base."""
    if adapter_path is None:
        yield None
        return
    if not Path(adapter_path).is_dir():
        raise UserError(f"adapter directory not found: {adapter_path}")
    model = adapter_name(adapter_path)
    client.load_adapter(model, str(adapter_path))
    try:
        yield model
    finally:
        client.unload_adapter(model)
