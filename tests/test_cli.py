import json
import subprocess
import sys

from console import SELFDISCO

HEAVY = ("torch", "transformers", "trl", "vllm", "textual", "peft")

PROBE = """
import json, sys
from selfdisco.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads('%s')))
print("HEAVY=" + json.dumps(heavy))
"""


def run_probe(*args: str) -> subprocess.CompletedProcess:
    code = PROBE % json.dumps(HEAVY)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)


def heavy_modules(output: str) -> list[str]:
    line = [ln for ln in output.splitlines() if ln.startswith("HEAVY=")][-1]
    return json.loads(line.removeprefix("HEAVY="))


def test_help_imports_no_heavy_library():
    result = run_probe("--help")
    assert "doctor" in result.stdout
    assert heavy_modules(result.stdout) == []


def test_every_command_help_imports_no_heavy_library():
    from selfdisco.cli import COMMANDS

    assert {"run", "resume", "serve", "train", "losses", "tui"} <= set(COMMANDS)
    for name in COMMANDS:
        result = run_probe(name, "--help")
        assert f"selfdisco {name}" in result.stdout, result.stderr
        assert heavy_modules(result.stdout) == [], name


def test_console_script_lists_commands():
    result = subprocess.run([SELFDISCO, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in ("doctor", "models"):
        assert name in result.stdout


def test_unknown_command_is_a_clear_error():
    result = subprocess.run([SELFDISCO, "no-such-command"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr
