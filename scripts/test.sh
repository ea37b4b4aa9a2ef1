#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: the import-layers contract (lint-imports), the
# fast unit tests, then the integration tests (real vLLM servers on CPU, the bundled 135M model).
# Extra arguments go to both pytest runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "[test] import layers"
"$ROOT/.venv/bin/lint-imports"
echo "[test] unit tests"
"$ROOT/.venv/bin/python" -m pytest "$@"
echo "[test] integration tests"
"$ROOT/.venv/bin/python" -m pytest -m integration --durations=12 "$@"
