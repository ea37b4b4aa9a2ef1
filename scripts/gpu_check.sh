#!/usr/bin/env bash
# The prepared GPU check, for a single-GPU machine whose only network is the package registries
# (about 8 minutes): installs the GPU stack (SELFDISCO_STACK=gpu scripts/setup.sh), then
# scripts/gpu_check.py runs doctor, serves the bundled models on CUDA, loads a LoRA at run time,
# sleeps and wakes the server, trains 2 steps in bf16 while it sleeps and runs a one-generation
# smoke discovery. Each step is written PASS, FAIL or SKIP with its figures and seconds to
# DIR/gpu_check.txt (DIR: --out, else $OUT, else checkpoints/gpu_check). Exit status 0 when no
# step failed.
#
# Usage: scripts/gpu_check.sh [--cpu] [--out DIR] [--steps a,b,...] [--budget-s S]
#   --cpu   keep the installed stack and run on the CPU (sleep and wake are skipped)
#   Other arguments go to scripts/gpu_check.py (see its --help).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

cpu=0
for arg in "$@"; do
    if [ "$arg" = --cpu ]; then cpu=1; fi
done

started=$SECONDS
log="$(mktemp "${TMPDIR:-/tmp}/selfdisco-setup.XXXXXX")"
if [ "$cpu" = 1 ]; then
    setup=SKIP
    echo "[gpu-check] --cpu: the installed stack is kept" >"$log"
else
    echo "[gpu-check] installing the GPU stack (log: $log)"
    if SELFDISCO_STACK=gpu "$ROOT/scripts/setup.sh" >"$log" 2>&1; then
        setup=PASS
    else
        setup=FAIL
    fi
    tail -n 3 "$log"
fi

# The venv's Python when set-up made one; any Python 3 can still write the summary.
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then PY=python3; fi
cd "$ROOT"
exec "$PY" "$ROOT/scripts/gpu_check.py" --setup "$setup" \
    --setup-seconds "$((SECONDS - started))" --setup-log "$log" "$@"
