"""Setting up a held-out evaluation of a run: which losses, which fresh seeds, which prompts
and sampling seed the task scores on (HeldoutScoring), how long it will take, where points are
kept, and the trainer-and-scorer protocols call (WorkerTrials; ClassificationTrials for
digits)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.execution.executors import JOB_FILE, run_job_process
from selfdisco.execution.records import Job, Result
from selfdisco.heldout import RECORD_SEED, TASK_SCORED, HeldoutLoss, Point
from selfdisco.launch.plan import plan_run
from selfdisco.llm import topology
from selfdisco.llm.backend import detect_backend, resolve_dtype
from selfdisco.llm.client import LLMClient
from selfdisco.llm.models import resolve_model
from selfdisco.llm.server import VLLMServer
from selfdisco.losses import catalog
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import HELDOUT_DONE, SCORED
from selfdisco.rundir.paths import checkpoints_dir
from selfdisco.seeds import derive, replicate_seed
from selfdisco.tasks import get_task

# Failures that say nothing about the loss: a rerun measures such a point again.
TRANSIENT_CAUSES = ("server", "timeout", "killed")
PROMPT_CHOICES = {
    "unused": "prompts the search never scored, with a sampling seed of their own",
    "search": "the search's own prompts and sampling seed (not held out)",
}
SAMPLING_LABEL = "heldout-sampling"  # seeds.derive(root, SAMPLING_LABEL): held-out sampling
# A classification task's references (its catalog), by default and by name.
CLASSIFICATION_REFERENCES = ["cross_entropy"]
PREFERENCE_REFERENCES = ["dpo", "lrml"]


@dataclass(frozen=True)
class HeldoutScoring:
    """What the run's task scores held-out points on (`selfdisco heldout --prompts`).

    Attributes:
        requested: "unused" or "search" (PROMPT_CHOICES).
        seen_by_search: the scored prompts are the search's own (asked for, or standing in).
        task_options: what every point's task options get (before the protocol's own).
        search_options: the task options that score on the search's own prompts and sampling
            seed, for a choice that must not touch held-out data (confirm's dpo beta).
        text: which prompts and sampling seed, in words.
        fallback: why the search's prompts stand in for unused ones ("" where they do not).
    """

    requested: str
    seen_by_search: bool
    task_options: dict = field(default_factory=dict)
    search_options: dict = field(default_factory=dict)
    text: str = ""
    fallback: str = ""

    def line(self) -> str:
        """One line for the command's output."""
        if self.fallback:
            return f"scored on {self.text}, not on prompts the search never scored: {self.fallback}"
        how = " (--prompts search)" if self.requested == "search" else ""
        return f"scored on {self.text}{how}"

    def metrics(self) -> dict[str, Any]:
        """What a task-scored row's metrics["scoring"] keeps."""
        return {"prompts": "search" if self.seen_by_search else "unused",
                "seen_by_search": self.seen_by_search, "text": self.text,
                "fallback": self.fallback, "task_options": dict(self.task_options)}

    def note(self) -> str:
        """The report's note (it opens the held-out section)."""
        return f"held-out points the run's task scores ({', '.join(TASK_SCORED)}): {self.line()}"


def heldout_scoring(config: Any, recorded: list[dict], prompts: str = "unused",
                    count: int | None = None) -> HeldoutScoring:
    """Which prompts and sampling seed the run's task scores held-out points on.

    Args:
        config: the run's RunConfig.
        recorded: the metrics of the run's scored evaluations (a task may read from them how
            the run was scored, e.g. digits' split version).
        prompts: "unused" (default: prompts the search never scored, and a sampling seed
            derived apart from the search's) or "search".
        count: how many unused prompts (None: the task's default).

    Raises:
        UserError: an unknown choice, or too few unused prompts (the task says how to fix it).
    """
    if prompts not in PROMPT_CHOICES:
        raise UserError(f"--prompts {prompts!r}: choose "
                        + " or ".join(f"{name} ({what})" for name, what in PROMPT_CHOICES.items()))
    if count is not None and (prompts == "search" or count < 1):
        raise UserError(f"--prompt-count {count}: give 1 or more, with --prompts unused "
                        "(the search's own prompts are as many as it scored)")
    task = get_task(config.task.name)
    hook = getattr(task, "heldout_options", None)
    if hook is None:
        text = (f"the {task.name} task's own prompts and sampling seed, the search's (not "
                "held out)")
        fallback = (f"the {task.name} task keeps no prompts apart from the search's"
                    if prompts == "unused" else "")
        return HeldoutScoring(prompts, True, {}, {}, text, fallback)
    about = dict(preset=config.preset, options=dict(config.task.options),
                 sampling_seed=derive(config.seed, SAMPLING_LABEL), recorded=recorded)
    options, text, fallback = hook(unused=prompts == "unused", count=count, **about)
    search_options = hook(unused=False, count=None, **about)[0]
    return HeldoutScoring(prompts, prompts == "search" or bool(fallback), options,
                          search_options, text, fallback)


def recorded_metrics(archive: Archive) -> list[dict]:
    """The metrics of the run's scored evaluations (what heldout_scoring reads)."""
    return [row.metrics for row in archive.rows("status = ?", (SCORED,)) if row.metrics]


def fresh_seeds(config: Any, count: int) -> list[int]:
    """`count` training seeds derived from the run's root seed, none of them one the run
    trained with (its training seed, its replicates' and its baselines')."""
    if count < 1:
        raise UserError(f"--seeds must be 1 or more, not {count}")
    train_seed = derive(config.seed, "train")
    trained = max(1, config.discovery.replicates, config.discovery.baseline_seeds)
    used = {replicate_seed(train_seed, k) for k in range(trained)}
    seeds: list[int] = []
    k = 0
    while len(seeds) < count:
        seed = derive(config.seed, "heldout", k)
        k += 1
        if seed not in used:
            seeds.append(seed)
    return seeds


def reference_catalog(kind: str) -> dict[str, str]:
    """Catalog loss name -> code, for a task of this kind: the classification baselines
    (digits) or the preference-loss catalog."""
    if kind == "classification":
        # lazy: the classification catalog is a task's
        from selfdisco.tasks.digits import screening

        return {name: code.strip() + "\n" for name, (_, code) in screening.CATALOG.items()}
    return {name: entry.candidate.code for name, entry in catalog.CATALOG.items()}


def default_references(kind: str) -> list[str]:
    """The references evaluated beside a run's losses when none are named."""
    return list(CLASSIFICATION_REFERENCES if kind == "classification"
                else PREFERENCE_REFERENCES)


def choose_losses(archive: Archive, *, top: int, references: list[str],
                  names: list[str] | None = None, kind: str = "preference") -> list[HeldoutLoss]:
    """The run's `top` discovered losses by fitness, then the catalog's `references`; or, with
    `names`, exactly those (candidate ids of the run or catalog names; the catalog of the
    task's `kind`, reference_catalog). A loss whose code is already chosen is left out."""
    codes = reference_catalog(kind)
    chosen: list[HeldoutLoss] = []
    if names:
        items = [_named(archive, name, codes) for name in names]
    else:
        scored = [r for r in archive.rows("kind = 'proposal' AND status = ?", (SCORED,))
                  if r.code and r.fitness is not None]
        scored.sort(key=lambda r: -r.fitness)
        items = [HeldoutLoss(r.id, r.name or r.id, r.code, r.fitness) for r in scored[:top]]
        items += [_catalog_loss(codes, name) for name in references]
    for item in items:
        if all(item.code != c.code and item.id != c.id for c in chosen):
            chosen.append(item)
    if not chosen:
        raise UserError("no loss to evaluate: the run has no scored discovered loss and no "
                        "reference was named; give --losses ID,... or --references dpo,...")
    return chosen


def _named(archive: Archive, name: str, codes: dict[str, str]) -> HeldoutLoss:
    row = archive.get(name)
    if row is not None:
        if not row.code:
            raise UserError(f"--losses: {name} has no loss code (the untrained base policy)")
        return HeldoutLoss(row.id, row.name or row.id, row.code, row.fitness)
    if name in codes:
        return _catalog_loss(codes, name)
    raise UserError(f"--losses: {name!r} is neither a candidate of this run nor a catalog "
                    f"loss; candidates are ids like g01-c1 (see `selfdisco report`), catalog "
                    f"losses: {', '.join(codes)}")


def _catalog_loss(codes: dict[str, str], name: str) -> HeldoutLoss:
    if name not in codes:
        raise UserError(f"--references: {name!r} is not in the loss catalog of this run's "
                        f"task; choose from {', '.join(codes)}")
    return HeldoutLoss(name, name, codes[name])


def seconds_per_point(archive: Archive, protocol: str) -> float | None:
    """The mean of a protocol's measured points; before the first, what a candidate of the run
    cost to train and score (a point trains one unless it reuses an adapter)."""
    seconds = [row.metrics["seconds"] for row in archive.heldout_rows(protocol)
               if row.status == HELDOUT_DONE and "seconds" in row.metrics]
    if seconds:
        return sum(seconds) / len(seconds)
    run = measured_seconds(archive)
    return sum(run.values()) if run else None


def measured_seconds(archive: Archive) -> dict[str, float] | None:
    """The run's median seconds per trained candidate for preparing data, training and
    scoring (from its archive's timings), or None when it trained none."""
    rows = [r for r in archive.rows("status = ?", (SCORED,))
            if r.code and r.timings.get("train")]
    if not rows:
        return None
    replicates = [max(1, len(archive.replicates(r.id))) for r in rows]
    return {stage: round(statistics.median(r.timings.get(stage, 0.0) / n
                                           for r, n in zip(rows, replicates, strict=True)), 2)
            for stage in ("data", "train", "score")}


class PointStore:
    """Held-out points in the run's archive; `record` also emits the heldout_point event. The
    rows of a task-scored protocol (TASK_SCORED) say what they were scored on
    (metrics["scoring"], and metrics["note"], which opens the report's held-out section),
    unless the protocol says it itself."""

    def __init__(self, archive: Archive, emit: Any, scoring: HeldoutScoring | None = None):
        self.archive = archive
        self.emit = emit
        self.scoring = scoring
        self.totals: dict[str, int] = {}  # protocol -> points it measures, for the events

    def done(self, point: Point) -> bool:
        """Recorded, and not a failure that a rerun should measure again."""
        row = self.archive.db.execute(
            "SELECT status, metrics FROM heldout WHERE protocol = ? AND loss_id = ? AND beta = ?"
            " AND seed = ?", (point.protocol, point.loss_id, float(point.beta), point.seed)
        ).fetchone()
        if row is None:
            return False
        return row[0] == HELDOUT_DONE or json.loads(row[1]).get("cause") not in TRANSIENT_CAUSES

    def record(self, point: Point, metrics: dict, status: str = HELDOUT_DONE) -> None:
        if self.scoring is not None and point.protocol in TASK_SCORED:
            metrics = {"scoring": self.scoring.metrics(), "note": self.scoring.note(),
                       **metrics}
        self.archive.put_heldout(point.protocol, point.loss_id, point.beta, point.seed, status,
                                 metrics)
        if point.seed == RECORD_SEED:  # a statement or a verdict, not a measured point
            self.emit("log", level="info", message=str(metrics.get("summary") or point.label()))
            return
        measured = sum(1 for r in self.archive.heldout_rows(point.protocol)
                       if r.seed != RECORD_SEED)
        self.emit("heldout_point", protocol=point.protocol, loss_id=point.loss_id,
                  beta=point.beta, seed=point.seed, status=status, metrics=metrics,
                  done=measured, total=max(measured, self.totals.get(point.protocol, 0)))


class WorkerTrials:
    """Trains and scores held-out points in worker processes (selfdisco.execution.worker), one at a
    time, against the run's policy model served by vLLM: a server at `server_url` (or the
    run's server.url), else one started on first use and stopped by close()."""

    def __init__(self, run_dir: Path, config: Any, settings: Any, server_url: str = "",
                 scoring_options: dict | None = None):
        self.run_dir = Path(run_dir)
        self.config = config
        self.settings = settings
        self.server_url = server_url or config.server.url
        self.scoring_options = dict(scoring_options or {})  # HeldoutScoring.task_options
        self._server: Any = None
        self._template: Any = None
        self._client: Any = None

    def policy(self) -> Any:
        """An LLMClient for the policy model (LoRA adapters load at run time)."""
        if self._client is None:
            template = self.template()
            self._client = LLMClient(template.server_url, template.served_model)
        return self._client

    def template(self) -> Any:
        """The job every point fills in (starting the server the first time)."""
        if self._template is None:
            self._template = self._start()
        return self._template

    def _start(self) -> Any:
        config = self.config
        policy_path = resolve_model(config.models.policy)
        dtype = resolve_dtype(config.server.dtype, detect_backend(), self.settings.bf16)
        base_url, served_model, sleep_url = self._serve(policy_path, dtype)
        cache_dir = checkpoints_dir() / "cache"
        return Job(task=config.task.name, task_options=dict(config.task.options),
                   task_preset=config.preset, task_seed=derive(config.seed, "task"),
                   train_seed=0, model_path=policy_path, cache_dir=str(cache_dir),
                   ref_cache_dir=str(cache_dir / "refcache"), train_settings=self.settings,
                   server_url=base_url, served_model=served_model, sleep_url=sleep_url,
                   dtype=dtype)

    def _serve(self, policy_path: str, dtype: str) -> tuple[str, str, str]:
        """(the policy server's API root, its model name, its sleep URL or ""): the server at
        server_url, or one started here."""
        config = self.config
        if self.server_url:
            url = topology.parse_server_url(self.server_url)
            with LLMClient(url, "") as probe:
                served = probe.list_models()
            if not served:
                raise UserError(f"the server at {url} serves no model")
            return url, served[0], ""
        placement = plan_run(config)
        self._server = VLLMServer(
            policy_path, log_path=self.run_dir / "heldout" / "server.log",
            max_model_len=config.server.max_model_len,
            max_lora_rank=config.server.max_lora_rank,
            startup_timeout_s=config.server.start_timeout_s, dtype=dtype,
            check_numerics=config.server.check_numerics,
            **placement.server_options("policy"))
        self._server.start()
        return (self._server.base_url, self._server.model_name,
                topology.sleep_url(self._server))

    def evaluate(self, point: Point, code: str, task_options: dict | None = None) -> Result:
        """Train under `code` at point.beta with training seed point.seed, then score with the
        run's task (its options updated with the scoring options, then task_options); files in
        heldout/<point>/."""
        template = self.template()
        job_dir = self.run_dir / "heldout" / point.dir_name()
        job_dir.mkdir(parents=True, exist_ok=True)
        job = replace(template.for_candidate(point.loss_id, point.loss_id, code, str(job_dir),
                                             train_seed=point.seed),
                      train_settings=replace(self.settings, beta=point.beta),
                      task_options={**template.task_options, **self.scoring_options,
                                    **(task_options or {})})
        (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), indent=2))
        timeout = self.config.discovery.candidate_timeout_min * 60
        return run_job_process(job_dir, timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.stop()


class ClassificationTrials:
    """Evaluates held-out points of a classification task (digits): each loss trained and
    scored in a child of the task's confined sandbox (the search's evaluator), no policy and
    no model server."""

    def __init__(self, config: Any, scoring_options: dict | None = None):
        self.config = config
        self.options = {**config.task.options, **(scoring_options or {})}
        self._evaluations: Any = None

    def evaluate(self, point: Point, code: str, task_options: dict | None = None) -> Result:
        """Train under `code` with training seed point.seed and score on the split the
        options name (point.beta is unused: a classification loss has none)."""
        # lazy: the sandbox server (it imports torch) starts on the first point
        from selfdisco.execution.classification import result_of
        from selfdisco.tasks.digits.task import Evaluations

        if self._evaluations is None:
            self._evaluations = Evaluations(self.config.discovery.candidate_timeout_min * 60)
        options = {**self.options, **(task_options or {})}
        return result_of(self._evaluations.run(code, options, point.seed), 1.0)

    def policy(self) -> Any:
        raise UserError(f"the {self.config.task.name} task trains classifiers, not a policy "
                        "model: the pairwise and lmeval protocols evaluate policies; choose "
                        "--protocols confirm")

    def close(self) -> None:
        if self._evaluations is not None:
            self._evaluations.close()
