"""The discovery loop (the paper's Algorithm 1): burn-in, then generations of propose, screen,
evaluate, record and promote. No UI and no torch here: it writes the archive and the event log.

Every decision is recorded before it is acted on, and the loop's state is rebuilt from the
archive on start, so a run killed at any moment resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from selfdisco import stats
from selfdisco.config import RunConfig
from selfdisco.discovery import propose
from selfdisco.discovery.evaluation import code_sha, combine, twin_at_stage, twin_on_seed
from selfdisco.discovery.interface import ProposerRequests, Services, State
from selfdisco.discovery.propose import (
    ProposerUnavailable as ProposerUnavailable,  # raised by run()
)
from selfdisco.discovery.proposer import promotion
from selfdisco.discovery.search import fidelity
from selfdisco.execution.records import Result
from selfdisco.formatting import format_fitness
from selfdisco.losses import Candidate, Fingerprint
from selfdisco.losses.fingerprint import VERSION
from selfdisco.losses.screening import ScreenResult
from selfdisco.rundir.archive import REFERENCE_SHAPE, RHO_REACH, Archive, Row
from selfdisco.rundir.control import ControlReader, apply_command
from selfdisco.rundir.events import (
    DIVERGED,
    EVALUATED,
    FINAL,
    PROPOSED,
    REJECTED,
    SCORED,
    SCORING,
    TRAINING,
    EventWriter,
)
from selfdisco.rundir.shape import reach_of

STOPPED = "stopped on request"  # the reason a run ends with when the user stops it
DUPLICATE_OF = "duplicate_of"  # metrics key of a row that trained the same as a recorded one
FAILED_GENERATIONS = 2  # generations in a row whose every proposer request failed end a run


class Discovery:
    """The loop; its steps (propose, fidelity, population, promotion) see it as an
    interface.Loop."""

    def __init__(self, config: RunConfig, run_dir: Path, archive: Archive, events: EventWriter,
                 services: Services):
        self.config = config
        self.settings = config.discovery
        self.run_dir = run_dir
        self.archive = archive
        self.events = events
        self.services = services
        self.control = ControlReader(run_dir)
        self.state = State()
        self.paused = False
        self.stop_requested = False
        self.started = time.monotonic()
        self.requests = ProposerRequests()  # of this generation
        self.can_self_improve = self.settings.self_improve != "off" and (
            config.proposer_model == config.models.policy)

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> str:
        """Run until done; returns why it ended."""
        try:
            return self._run()
        finally:
            self._release_proposer()

    def _release_proposer(self) -> None:
        """Unload the proposer's adapter (a shared server keeps no adapters of a finished run)."""
        if self.state.proposer_adapter and self.services.adapters is not None:
            try:
                self.services.adapters.unload_adapter(self.state.proposer_adapter)
            except Exception:  # noqa: BLE001 - the server may already be gone
                pass

    def _run(self) -> str:
        self._restore()
        self.burn_in()
        reason = "generation limit reached"
        stale = failed = 0
        best_before = self._best_fitness()
        for generation in range(1, self.settings.generations + 1):
            if self.archive.generation_state(generation) == "done":
                continue
            if self.checkpoint():
                reason = STOPPED
                break
            budget_min = self.settings.time_budget_min
            if budget_min and self._elapsed_min() >= budget_min:
                reason = f"time budget of {budget_min} minutes used"
                break
            self.requests = ProposerRequests()
            self.generation(generation)
            sent, refused = self.requests.sent, self.requests.failed
            failed = failed + 1 if sent and refused == sent else 0
            if failed >= FAILED_GENERATIONS:
                reason = (f"every proposer request failed for {failed} generations (last error: "
                          f"{self.requests.last_error}); fix the cause, then resume the run")
                self.events.emit("log", level="error", message=reason)
                break
            best = self._best_fitness()
            improved = best is not None and (best_before is None or best > best_before)
            stale = 0 if improved else stale + 1
            best_before = best
            if self.settings.patience and stale >= self.settings.patience:
                reason = f"no improvement for {stale} generations"
                break
            if self.stop_requested:
                reason = STOPPED
                break
        best = self.archive.best()
        self.events.emit("run_finished", reason=reason, stopped=reason == STOPPED,
                         best_id=best.id if best else None,
                         best_fitness=best.fitness if best else None)
        return reason

    def _elapsed_min(self) -> float:
        return (time.monotonic() - self.started) / 60

    def _best_fitness(self) -> float | None:
        best = self.archive.best()
        return best.fitness if best else None

    # ---- control ---------------------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Obey pause/resume/stop commands; True when the run should stop now."""
        while True:
            for command in self.control.poll():
                self.events.emit("control", command=command)
                self.paused, self.stop_requested = apply_command(command, self.paused,
                                                                 self.stop_requested)
            if not self.paused:
                return self.stop_requested
            time.sleep(0.5)

    # ---- restore ---------------------------------------------------------------------------
    def _restore(self) -> None:
        for row in self.archive.rows():
            # a duplicate found in training keeps its fingerprint: it differs from its twin's
            # where training did not go, so a copy of it is recognised before training
            if row.fingerprint and (row.status != REJECTED or DUPLICATE_OF in row.metrics):
                fingerprint = Fingerprint.from_dict(row.fingerprint)
                if fingerprint.version == VERSION:
                    self.state.fingerprints[row.id] = fingerprint
                elif row.code:  # an archive from before the current fingerprint
                    self._fingerprint_row(row)
        promoted = self.archive.get_meta("proposer")
        base = self.archive.get("base")
        self.state.proposer_fitness = base.fitness if base and base.status == SCORED else None
        if promoted:
            self.state.proposer_id = promoted["id"]
            self.state.proposer_fitness = promoted["fitness"]
            self.state.proposer_adapter = promoted["model"]
            if self.services.adapters is not None:
                self.services.adapters.load_adapter(promoted["model"], promoted["adapter"])

    # ---- burn-in ---------------------------------------------------------------------------
    def burn_in(self) -> None:
        """Measure the untrained policy and the baseline losses on this task (cached)."""
        wanted = [("base", "base", None, None)]
        for name in self.settings.burn_in:
            entry = self.services.catalog(name)
            wanted.append((f"burn-{name}", "burn_in", name, entry))
        todo = []
        for id, kind, name, entry in wanted:
            row = self.archive.get(id)
            if row is None:
                fields = {"name": name or "base (untrained policy)", "proposer": "catalog"}
                if entry:
                    fields.update(code=entry["code"], code_sha=code_sha(entry["code"]),
                                  thought=entry.get("full_name", ""))
                row = self.archive.add(id, 0, kind, PROPOSED, **fields)
                self.events.emit("candidate_proposed", id=id, generation=0, name=row.name,
                                 thought=row.thought or "", code=row.code or "",
                                 proposer="catalog", attempt=0)
            if row.code and id not in self.state.fingerprints:
                self._fingerprint_row(row)
            if row.status in EVALUATED:
                continue
            for k in self._missing_replicates(row) if self.services.burn_in_cache else []:
                cached = self.services.burn_in_cache.get(_cache_id(id, k), row.code)
                if cached:
                    source = cached.cached_from or "an earlier run"
                    self.events.emit("log", level="info", message=(
                        f"{id}{self._seed_label(row, k)} reused from the burn-in cache (run "
                        f"{source})"))
                    self._store_replicate(row, k, replace(cached, cached_from=source))
            if self.archive.get(id).status not in EVALUATED:
                todo.append(row)
        if todo:
            self.mark_stage(0, "burn_in", "start", f"{len(todo)} to evaluate")
            self._evaluate(todo, cache=True)
            self.mark_stage(0, "burn_in", "end", "")
        base = self.archive.get("base")
        if base and base.status == SCORED and self.state.proposer_id == "base":
            self.state.proposer_fitness = base.fitness
        if self.archive.get_meta(REFERENCE_SHAPE) is None:
            self._record_reference_shape()
        self._record_reach()

    def screen(self, name: str, code: str) -> ScreenResult:
        """Screen code in the sandbox; a passing result carries its shape at the run's beta."""
        return self.services.screen(Candidate(thought="", name=name, code=code),
                             timeout_s=self.settings.screen_timeout_s, beta=self.services.beta)

    def _fingerprint_row(self, row: Row) -> None:
        result = self.screen(row.name, row.code)
        if result.ok:
            self.state.fingerprints[row.id] = result.fingerprint
            self.archive.update(row.id, fingerprint=result.fingerprint.to_dict(),
                                shape=result.shape.to_dict())

    def _record_reference_shape(self) -> None:
        """dpo's shape at the run's beta, which the TUI and the report draw beside the others."""
        name = self.services.reference_loss
        result = self.screen(name, self.services.catalog(name)["code"])
        if result.ok:
            self.archive.set_meta(REFERENCE_SHAPE, result.shape.to_dict())

    def _record_reach(self) -> None:
        """Record the rho the burn-in's trained policies reached, where duplicates are judged
        from now on (shape.reach_of), once, before generation 1: a run begun before the reach
        was recorded keeps the full grid, and a resumed run reads the same reach."""
        if self.archive.get_meta(RHO_REACH) is not None or self.archive.generations():
            return
        trained = [result["metrics"].get("train") or {}
                   for row in self.archive.rows("kind = 'burn_in'")
                   for result in self.archive.replicates(row.id).values()
                   if result.get("status") == SCORED]
        reach = reach_of(trained, self.services.beta)
        if reach is None:  # no rho logged (the digits task): the full grid
            return
        self.archive.set_meta(RHO_REACH, reach.to_dict())
        self.events.emit("log", level="info", message=(
            f"duplicates are judged on rho in [{reach.low:.1f}, {reach.high:.1f}] at beta "
            f"{reach.beta:g}, where {reach.trainings} burn-in trainings went"))

    # ---- one generation ----------------------------------------------------------------------
    def generation(self, g: int) -> None:
        self.events.emit("generation_started", generation=g)
        self._check_server()
        if self.archive.generation_state(g) in (None, "proposing"):
            self.archive.set_generation(g, "proposing", proposer=self.state.proposer_id)
            self.mark_stage(g, "propose", "start", f"proposer: {self.state.proposer_id}")
            self._propose(g)
            self.mark_stage(g, "propose", "end", "")
        self.archive.set_generation(g, "evaluating")
        pending = self.archive.rows("generation = ? AND status = ?", (g, PROPOSED))
        if pending and fidelity.enabled(self.settings):
            pending = [r for r in fidelity.cheap_stage(self, g, pending)
                       if not self._cheap_twin(r)]
        if pending:
            self.mark_stage(g, "evaluate", "start", f"{len(pending)} candidates")
            self._evaluate(pending)
            self.mark_stage(g, "evaluate", "end", "")
        self._promote(g)
        self.archive.set_generation(g, "done")
        best = self.archive.best()
        self.events.emit("generation_finished", generation=g, best_id=best.id if best else None,
                         best_fitness=best.fitness if best else None)

    # ---- propose and screen (propose.py) -----------------------------------------------------
    def _propose(self, g: int) -> None:
        propose.propose_generation(self, g)

    def proposer_messages(self, shown: list[Row] | None = None) -> list[dict]:
        """The proposer's context (promotion.py and the islands ask for it too)."""
        return propose.context(self, shown)

    def ask_proposer(self, messages: list[dict], n: int, seed: int,
                     model: str | None) -> list[str]:
        """n answers of the proposer served as `model` (None: the base model)."""
        return propose.ask(self, messages, n, seed, model)

    # ---- evaluate and record --------------------------------------------------------------------
    def _evaluate(self, rows: list[Row], cache: bool = False) -> None:
        """Train and score rows, each with its training seeds not yet recorded (replicates).
        A proposal with several seeds and none recorded trains its first seed alone first: one
        that trains the same as a recorded row is a duplicate and trains no further."""
        fresh = [r for r in rows if r.kind == "proposal" and self._seeds(r) > 1
                 and not self.archive.replicates(r.id)]
        if fresh:
            self._train(fresh, cache, first_only=True)
            rows = [r for r in rows if self.archive.get(r.id).status not in FINAL]
        self._train(rows, cache)

    def _train(self, rows: list[Row], cache: bool, retry: bool = True,
               first_only: bool = False) -> None:
        """Train and score rows on their missing seeds (first_only: the first of them); one
        that failed because of the model server (cause "server") is evaluated once more, after
        a health check of the server."""
        last_emit: dict[str, float] = {}
        scoring: set[str] = set()
        hit_by_crash: list[Row] = []
        missing = {row.id: self._missing_replicates(row)[:1 if first_only else None]
                   for row in rows}
        for row in [r for r in rows if not missing[r.id]]:  # killed after its last seed
            self._record_if_complete(row)
        rows = [r for r in rows if missing[r.id]]
        started: set[str] = set()

        def on_progress(row: Row, progress: dict) -> None:
            now = time.monotonic()
            step, total = progress.get("step", 0), progress.get("total", 0)
            if total and step >= total and row.id not in scoring:
                scoring.add(row.id)
                self.archive.update(row.id, status=SCORING)
                self.events.emit("candidate_status", id=row.id, status=SCORING)
            if now - last_emit.get(row.id, 0) >= 1.0 or step >= total:
                last_emit[row.id] = now
                self.events.emit("training_progress", id=row.id, step=step, total=total,
                                 loss=progress.get("loss"))

        def on_done(row: Row, result: Result) -> None:
            if retry and result.cause == "server":
                if row not in hit_by_crash:
                    hit_by_crash.append(row)
                return
            k = result.replicate or 0
            if cache and self.services.burn_in_cache and result.status == SCORED:
                self.services.burn_in_cache.put(_cache_id(row.id, k), row.code, result)
            self._store_replicate(row, k, result)

        def on_start(row: Row) -> None:
            if row.id in started:  # another training seed of the same row
                return
            started.add(row.id)
            status = SCORING if row.code is None else TRAINING
            self.archive.update(row.id, status=status)
            self.events.emit("candidate_status", id=row.id, status=status)

        if not rows:
            return
        if any(self._seeds(row) > 1 for row in rows):
            self.services.evaluator.evaluate(rows, on_progress, on_done, on_start,
                                             replicates=missing)
        else:
            self.services.evaluator.evaluate(rows, on_progress, on_done, on_start)
        if hit_by_crash:
            restarted = self._check_server()
            self.events.emit("log", level="warning", message=(
                f"the model server failed during {', '.join(r.id for r in hit_by_crash)}"
                f"{' and was restarted' if restarted else ''}; evaluating again"))
            self._train(hit_by_crash, cache, retry=False, first_only=first_only)

    def _check_server(self) -> bool:
        if self.services.health is None:
            return False
        restarted = bool(self.services.health())
        if restarted:
            self.events.emit("server", state="restarted", detail="after a crash")
        return restarted

    def _seeds(self, row: Row) -> int:
        """The row's training seeds: one for the untrained base policy (every policy is scored
        with the same sampling seeds), baseline_seeds for a burn-in baseline, else replicates."""
        if row.code is None:
            return 1
        if row.kind == "burn_in":
            return max(self.settings.replicates, self.settings.baseline_seeds)
        return self.settings.replicates

    def _missing_replicates(self, row: Row) -> list[int]:
        """The row's training seeds without a recorded result."""
        have = self.archive.replicates(row.id)
        return [k for k in range(self._seeds(row)) if k not in have]

    def _store_replicate(self, row: Row, k: int, result: Result) -> None:
        """Keep training seed k's result; record the row once all its seeds are in, or as a
        duplicate when it trained the same as a recorded row."""
        self.archive.put_replicate(row.id, k, result.to_dict())
        if self._seeds(row) > 1:
            self.events.emit("log", level="info", message=(
                f"{row.id}{self._seed_label(row, k)}: {result.status}"
                + (f" {format_fitness(result.fitness)}" if result.status == SCORED else "")))
        if row.kind == "proposal" and self._trained_before(row, k, result):
            return
        self._record_if_complete(row)

    def _trained_before(self, row: Row, k: int, result: Result) -> bool:
        """The trajectory check: whether training seed k's `result` trained the same as a
        recorded row's on that seed (evaluation.twin_on_seed); if so the row is recorded a
        duplicate of it."""
        status = self.archive.get(row.id).status
        if status in FINAL:  # a seed that was already running when its twin was found
            return status == REJECTED
        twin = twin_on_seed(self.archive, row, k, result)
        if twin is not None:
            where = f"training seed {k}" if self._seeds(row) > 1 else "the same training seed"
            self._record_duplicate(row, twin, where, result)
        return twin is not None

    def _cheap_twin(self, row: Row) -> bool:
        """The trajectory check at multi-fidelity's cheap stage (one seed, the same share of
        the training for every loss): a row promoted there that trained the same as an earlier
        row is recorded a duplicate and not trained fully."""
        entry = self.archive.stage(row.id, fidelity.CHEAP)
        result = Result.from_dict(entry["result"])
        twin = twin_at_stage(self.archive, row, fidelity.CHEAP)
        if twin is None:
            return False
        reason = self._record_duplicate(
            row, twin, f"{entry['fidelity']:.0%} of the training (the cheap stage)", result)
        self.archive.put_stage(row.id, fidelity.CHEAP,
                               {**entry, "decision": "duplicate", "rule": reason})
        return True

    def _record_duplicate(self, row: Row, twin: str, where: str, result: Result) -> str:
        """Record `row` a duplicate of the row `twin` that it trained the same as; what it
        measured stays in its metrics (its per-seed results in the archive). Returns why."""
        other = self.archive.get(twin)
        reason = (f"it trained the same as {other.name} ({twin}): on {where} and the run's "
                  f"pairs its per-prompt scores and rho statistics equal those of {twin}; "
                  "not trained further")
        metrics = {**result.metrics, DUPLICATE_OF: twin,
                   "measured": {"fitness": result.fitness, "stderr": result.stderr}}
        self.archive.update(row.id, status=REJECTED, stage="duplicate", reason=reason,
                            metrics=metrics)
        self.events.emit("candidate_rejected", id=row.id, stage="duplicate", reason=reason)
        return reason

    def _seed_label(self, row: Row, k: int) -> str:
        return f" (training seed {k})" if self._seeds(row) > 1 else ""

    def _record_if_complete(self, row: Row) -> None:
        """Record the combination of the row's per-seed results once all are in (the standard
        error pools the seed variance over the run's rows, stats.py)."""
        if self._missing_replicates(row) or self.archive.get(row.id).status in FINAL:
            return
        results = [Result.from_dict(r) for r in self.archive.replicates(row.id).values()]
        own = [(float(r.fitness), r.stderr) for r in results if r.status == SCORED]
        others = [stats.replicates_of(r) for r in self.archive.rows("status = ?", (SCORED,))
                  if r.id != row.id and r.code]
        pooled = stats.pooled_seed_variance([*others, own] if row.code else others)
        self.record_result(row, self._versus_dpo(row, combine(results, pooled)))

    def _versus_dpo(self, row: Row, result: Result) -> Result:
        """The result with its seed-blocked difference to dpo in metrics["vs_dpo"], once dpo
        is scored (the report and the TUI recompute it, with the run's final interaction and
        the correction for the run's number of comparisons)."""
        reference = self.archive.get(stats.REFERENCE_ID)
        if result.status != SCORED or row.id == stats.REFERENCE_ID or reference is None \
                or reference.status != SCORED:
            return result
        scored = replace(row, fitness=result.fitness, stderr=result.stderr,
                         metrics=result.metrics)
        others = [r for r in self.archive.rows("status = ?", (SCORED,)) if r.id != row.id]
        d = stats.difference(scored, reference, stats.run_interaction([*others, scored]))
        return replace(result, metrics={**result.metrics, "vs_dpo": {
            "difference": d.mean, "stderr": d.stderr, "df": d.df, "seeds": d.n_seeds,
            "paired": d.paired}})

    def record_result(self, row: Row, result: Result) -> None:
        """Write a row's final result to the archive and announce it."""
        fields = result.archive_fields()
        self.archive.update(row.id, **fields)
        if result.status == SCORED:
            self.events.emit("candidate_scored", id=row.id, fitness=fields["fitness"],
                             stderr=result.stderr, metrics=fields["metrics"])
        elif result.status == DIVERGED:
            self.events.emit("candidate_diverged", id=row.id, step=result.step,
                             reason=result.reason)
        else:
            self.events.emit("candidate_failed", id=row.id, reason=result.reason)

    # ---- self-improvement ---------------------------------------------------------------------
    def _promote(self, g: int) -> None:
        """A challenger proposer, nominated by the self_improve mode, takes over if it wins its
        duel (promotion.py)."""
        promotion.promote(self, g)

    def mark_stage(self, g: int, stage: str, state: str, detail: str) -> None:
        """Announce that a stage of generation g starts or ends."""
        self.events.emit("stage", generation=g, stage=stage, state=state, detail=detail)


def _cache_id(id: str, replicate: int) -> str:
    """A baseline's burn-in cache entry for one training seed (seed 0: the row's own id)."""
    return id if replicate == 0 else f"{id}/r{replicate}"
