"""Setting up a held-out evaluation of a run: which losses, which fresh seeds, how long it will
take, where points are kept, and the trainer-and-scorer protocols call (WorkerTrials)."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.execution.executors import JOB_FILE, run_job_process
from selfdisco.execution.records import Job, Result
from selfdisco.heldout import HeldoutLoss, Point
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

# Failures that say nothing about the loss: a rerun measures such a point again.
TRANSIENT_CAUSES = ("server", "timeout", "killed")


def fresh_seeds(config: Any, count: int) -> list[int]:
    """`count` training seeds derived from the run's root seed, none of them one the run
    trained with (its training seed and its replicates')."""
    if count < 1:
        raise UserError(f"--seeds must be 1 or more, not {count}")
    train_seed = derive(config.seed, "train")
    used = {replicate_seed(train_seed, k) for k in range(max(1, config.discovery.replicates))}
    seeds: list[int] = []
    k = 0
    while len(seeds) < count:
        seed = derive(config.seed, "heldout", k)
        k += 1
        if seed not in used:
            seeds.append(seed)
    return seeds


def choose_losses(archive: Archive, *, top: int, references: list[str],
                  names: list[str] | None = None) -> list[HeldoutLoss]:
    """The run's `top` discovered losses by fitness, then the catalog's `references`; or, with
    `names`, exactly those (candidate ids of the run or catalog names). A loss whose code is
    already chosen is left out."""
    chosen: list[HeldoutLoss] = []
    if names:
        items = [_named(archive, name) for name in names]
    else:
        scored = [r for r in archive.rows("kind = 'proposal' AND status = ?", (SCORED,))
                  if r.code and r.fitness is not None]
        scored.sort(key=lambda r: -r.fitness)
        items = [HeldoutLoss(r.id, r.name or r.id, r.code, r.fitness) for r in scored[:top]]
        items += [_catalog_loss(catalog, name) for name in references]
    for item in items:
        if all(item.code != c.code and item.id != c.id for c in chosen):
            chosen.append(item)
    if not chosen:
        raise UserError("no loss to evaluate: the run has no scored discovered loss and no "
                        "reference was named; give --losses ID,... or --references dpo,...")
    return chosen


def _named(archive: Archive, name: str) -> HeldoutLoss:
    row = archive.get(name)
    if row is not None:
        if not row.code:
            raise UserError(f"--losses: {name} has no loss code (the untrained base policy)")
        return HeldoutLoss(row.id, row.name or row.id, row.code, row.fitness)
    if name in catalog.CATALOG:
        return _catalog_loss(catalog, name)
    raise UserError(f"--losses: {name!r} is neither a candidate of this run nor a catalog "
                    f"loss; candidates are ids like g01-c1 (see `selfdisco report`), catalog "
                    f"losses: {', '.join(catalog.CATALOG)}")


def _catalog_loss(catalog: Any, name: str) -> HeldoutLoss:
    if name not in catalog.CATALOG:
        raise UserError(f"--references: {name!r} is not in the loss catalog; choose from "
                        f"{', '.join(catalog.CATALOG)}")
    return HeldoutLoss(name, name, catalog.CATALOG[name].candidate.code)


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
    """Held-out points in the run's archive; `record` also emits the heldout_point event."""

    def __init__(self, archive: Archive, emit: Any):
        self.archive = archive
        self.emit = emit
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
        self.archive.put_heldout(point.protocol, point.loss_id, point.beta, point.seed, status,
                                 metrics)
        measured = sum(1 for r in self.archive.heldout_rows(point.protocol))
        self.emit("heldout_point", protocol=point.protocol, loss_id=point.loss_id,
                  beta=point.beta, seed=point.seed, status=status, metrics=metrics,
                  done=measured, total=max(measured, self.totals.get(point.protocol, 0)))


class WorkerTrials:
    """Trains and scores held-out points in worker processes (selfdisco.execution.worker), one at a
    time, against the run's policy model served by vLLM: a server at `server_url` (or the
    run's server.url), else one started on first use and stopped by close()."""

    def __init__(self, run_dir: Path, config: Any, settings: Any, server_url: str = ""):
        self.run_dir = Path(run_dir)
        self.config = config
        self.settings = settings
        self.server_url = server_url or config.server.url
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
        sleep_url = ""
        if self.server_url:
            url = topology.parse_server_url(self.server_url)
            with LLMClient(url, "") as probe:
                served = probe.list_models()
            if not served:
                raise UserError(f"the server at {url} serves no model")
            base_url, served_model = url, served[0]
        else:
            placement = plan_run(config)
            self._server = VLLMServer(
                policy_path, log_path=self.run_dir / "heldout" / "server.log",
                max_model_len=config.server.max_model_len,
                max_lora_rank=config.server.max_lora_rank,
                startup_timeout_s=config.server.start_timeout_s, dtype=dtype,
                check_numerics=config.server.check_numerics,
                **placement.server_options("policy"))
            self._server.start()
            base_url, served_model = self._server.base_url, self._server.model_name
            sleep_url = topology.sleep_url(self._server)
        cache_dir = checkpoints_dir() / "cache"
        return Job(task=config.task.name, task_options=dict(config.task.options),
                   task_preset=config.preset, task_seed=derive(config.seed, "task"),
                   train_seed=0, model_path=policy_path, cache_dir=str(cache_dir),
                   ref_cache_dir=str(cache_dir / "refcache"), train_settings=self.settings,
                   server_url=base_url, served_model=served_model, sleep_url=sleep_url,
                   dtype=dtype)

    def evaluate(self, point: Point, code: str, task_options: dict | None = None) -> Result:
        """Train under `code` at point.beta with training seed point.seed, then score with the
        run's task (its options updated with task_options); files in heldout/<point>/."""
        template = self.template()
        job_dir = self.run_dir / "heldout" / point.dir_name()
        job_dir.mkdir(parents=True, exist_ok=True)
        job = replace(template.for_candidate(point.loss_id, point.loss_id, code, str(job_dir),
                                             train_seed=point.seed),
                      train_settings=replace(self.settings, beta=point.beta),
                      task_options={**template.task_options, **(task_options or {})})
        (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), indent=2))
        timeout = self.config.discovery.candidate_timeout_min * 60
        return run_job_process(job_dir, timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._server is not None:
            self._server.stop()
