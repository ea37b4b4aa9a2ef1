"""A discovery run on a classification task (digits): its services (its config check is
selfdisco/launch/checks.py's).

Nothing is served but the proposer: candidates are classification losses, screened by
classification_checks.py in the sandbox and evaluated by ClassificationEvaluator, and no policy
adapter is trained (so the proposer does not self-improve here).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from selfdisco.config import RunConfig
from selfdisco.discovery.evaluation import RecordedEvaluator
from selfdisco.discovery.interface import Services
from selfdisco.execution.classification import ClassificationEvaluator
from selfdisco.llm.backend import detect_backend, resolve_dtype
from selfdisco.llm.cache import Recorder
from selfdisco.llm.endpoint import open_llm
from selfdisco.llm.replay import ReplayClient
from selfdisco.losses.parse import parse_answer
from selfdisco.seeds import derive
from selfdisco.tasks import recorded_task_options
from selfdisco.tasks.digits import screening


def start_services(config: RunConfig, run_dir: Path, source, events, stack,
                   description: str):
    """The loop's Services for a classification run: the proposer (replay, attached or a
    server selfdisco starts) and the evaluator (the recorded run's, or live)."""
    if source.kind == "replay":
        proposer = ReplayClient(source.run_dir, recorder=Recorder(run_dir / "llm"))
        evaluator = RecordedEvaluator(source.run_dir)
    else:
        proposer = _proposer(config, run_dir, source, events, stack)
        evaluator = ClassificationEvaluator(recorded_task_options(config, run_dir),
                                            derive(config.seed, "train"),
                                            timeout_s=config.discovery.candidate_timeout_min * 60)
        stack.callback(evaluator.close)
    return classification_services(proposer, evaluator, description)


def classification_services(proposer, evaluator, description: str):
    """Services with the classification screening, baselines and prompts."""
    return Services(proposer=proposer, evaluator=evaluator, screen=screening.screen,
                    parse=partial(parse_answer, grammar="free"),
                    catalog=screening.catalog_entry, task_description=description,
                    beta=0.0, prompts="digits", reference_loss=screening.REFERENCE)


def _proposer(config: RunConfig, run_dir: Path, source, events, stack):
    """The proposer's client: a server selfdisco starts for the proposer model (stopped when
    the run ends), or the server at the configured URL."""
    options = dict(max_model_len=config.server.max_model_len,
                   startup_timeout_s=config.server.start_timeout_s,
                   dtype=resolve_dtype(config.server.dtype, detect_backend(), False),
                   check_numerics=config.server.check_numerics)
    if source.kind == "local":
        events.emit("server", state="starting", detail=f"vLLM for {config.proposer_model}")
    endpoint = stack.enter_context(open_llm(config.server.proposer_source, run_dir=run_dir,
                                            model_path=config.proposer_model,
                                            server_options=options))
    events.emit("server", state="started" if source.kind == "local" else "attached",
                detail=f"{config.proposer_model}: {endpoint.client.base_url}")
    return endpoint.client
