"""Print how long each stage of each generation took in a run (from its event log and archive).

    .venv/bin/python scripts/stage_times.py checkpoints/<run-id>
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events


def stage_times(run_dir: Path) -> list[dict]:
    rows = {r.id: r for r in Archive(run_dir).rows()}
    events = list(read_events(run_dir / "events.jsonl"))
    open_stage: dict[tuple, float] = {}
    per_gen: dict[int, dict] = {}
    gen_start: dict[int, float] = {}
    for e in events:
        if e["type"] == "stage":
            key = (e["generation"], e["stage"])
            if e["state"] == "start":
                open_stage[key] = e["t"]
            elif key in open_stage:
                gen = per_gen.setdefault(e["generation"], {})
                gen[e["stage"]] = gen.get(e["stage"], 0.0) + e["t"] - open_stage.pop(key)
        elif e["type"] == "generation_started":
            gen_start[e["generation"]] = e["t"]
        elif e["type"] == "generation_finished" and e["generation"] in gen_start:
            per_gen.setdefault(e["generation"], {})["total"] = e["t"] - gen_start[e["generation"]]
    out = []
    for g in sorted(per_gen):
        mine = [r for r in rows.values() if r.generation == g]
        train = sum(r.timings.get("train", 0) for r in mine)
        score = sum(r.timings.get("score", 0) for r in mine)
        out.append({"generation": g, **per_gen[g], "train_s": train, "score_s": score,
                    "valid": sum(r.status != "rejected" for r in mine),
                    "rejected": sum(r.status == "rejected" for r in mine)})
    return out


def main() -> int:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "events.jsonl").exists():
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(f"{'gen':>7} {'total s':>8} {'propose s':>10} {'evaluate s':>11} {'train s':>8} "
          f"{'score s':>8} {'valid':>6} {'rejected':>9}")
    for row in stage_times(Path(sys.argv[1])):
        label = "burn-in" if row["generation"] == 0 else row["generation"]
        print(f"{label!s:>7} {row.get('total', row.get('burn_in', 0) + row.get('data', 0)):8.1f} "
              f"{row.get('propose', 0):10.1f} {row.get('evaluate', row.get('burn_in', 0)):11.1f} "
              f"{row['train_s']:8.1f} {row['score_s']:8.1f} {row['valid']:6d} {row['rejected']:9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
