#!/usr/bin/env bash
# Set up (if needed) and run discovery on the default preset. Extra arguments go to `selfdisco run`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/selfdisco" run "$@"
