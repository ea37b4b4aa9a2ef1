"""Hostile candidates with the static check bypassed, for the confinement tests.

`unchecked_env` writes a sitecustomize module that every Python process started with the
returned environment imports first: it makes the loss compiler skip the allow-list and hand the
code every builtin, so what stops a hostile candidate is the operating system's confinement
alone. `hostile_code` builds a candidate whose module-level code (run when it is compiled, in
whichever process compiles it) tries one escape and raises REFUSED with the error, or DONE.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest

from selfdisco.losses import confine

SITECUSTOMIZE = '''
import ast
import builtins

from selfdisco.losses import compiler

_real_check = compiler.check_code


def _unchecked(code, *args, **kwargs):
    tree = ast.parse(code)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    params = ", ".join(a.arg for a in function.args.args)
    checked = _real_check(f"def {function.name}({params}):\\n    return 0\\n", *args, **kwargs)
    checked.tree = tree  # the code itself, never checked
    return checked


compiler.check_code = _unchecked
compiler._safe_builtins = lambda: dict(vars(builtins))
'''

SIGNATURES = {"preference": "pc, pr, rc, rr, beta", "classification": "logits, targets"}


def unchecked_env(directory: Path) -> dict[str, str]:
    """os.environ with PYTHONPATH leading to a sitecustomize that bypasses the static check."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(directory), env.get("PYTHONPATH")) if p)
    return env


def hostile_code(act: str, kind: str = "preference") -> str:
    """A loss whose module level runs `act` (Python statements on one line or several)."""
    body = "\n".join("    " + line for line in act.strip().splitlines())
    modules = "".join(f"{name} = __import__({name!r})\n" for name in ("os", "shutil", "socket"))
    return (f"{modules}"  # import statements are dropped by the compiler; __import__ is not
            f"try:\n{body}\n"
            f"except Exception as err:\n"
            f"    raise RuntimeError(f'REFUSED {{type(err).__name__}}: {{err}}')\n"
            f"raise RuntimeError('DONE')\n\n"
            f"def hostile({SIGNATURES[kind]}):\n"
            f"    return torch.zeros(1)\n")


def hostile_code_trying_all(named_acts: dict[str, str], kind: str = "preference") -> str:
    """A loss whose module level tries every act in turn and raises one line per act,
    "name: REFUSED <error>" or "name: DONE" (one child process for all of them)."""
    lines = ["outcomes = []"]
    for name, act in named_acts.items():
        body = "\n".join("    " + line for line in act.strip().splitlines())
        lines += [f"try:\n{body}\n    outcomes.append({name!r} + ': DONE')",
                  f"except Exception as err:\n"
                  f"    outcomes.append({name!r} + f': REFUSED {{type(err).__name__}}')"]
    modules = "".join(f"{name} = __import__({name!r})\n" for name in ("os", "shutil", "socket"))
    return (modules + "\n".join(lines) + "\nraise RuntimeError('; '.join(outcomes))\n\n"
            f"def hostile({SIGNATURES[kind]}):\n    return torch.zeros(1)\n")


def outcomes(message: str) -> dict[str, str]:
    """hostile_code_trying_all's message as {name: "DONE" or "REFUSED <error type>"}."""
    return dict(re.findall(r"(\w+): (DONE|REFUSED \w+)", message))


def acts(victim: Path, port: int, library: Path) -> dict[str, str]:
    """The escapes a confined candidate must not manage, by name."""
    return {
        "truncate": f"open({str(victim)!r}, 'w').close()",
        "overwrite": f"torch.save(torch.zeros(3), {str(victim)!r})",
        "network": f"socket.create_connection(('127.0.0.1', {port}), timeout=3).close()",
        "library_outside": f"torch.ops.load_library({str(library)!r})",
        "library_written": (f"shutil.copyfile({str(library)!r}, 'own.so')\n"
                            "torch.ops.load_library(os.path.abspath('own.so'))"),
    }


class Listener:
    """A TCP server on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.server.close()


VICTIM_TEXT = "the user's notes\n"
OWN_DIRECTORY = "open('mine.txt', 'w').write('x')"  # the control: a write it may make


class Target:
    """A user's file, a listening server and a library, all outside any job directory, and
    the escapes at them a confined candidate must not manage (acts)."""

    def __init__(self, directory: Path) -> None:
        self.victim = directory / "notes.txt"
        self.victim.write_text(VICTIM_TEXT)
        self.library = directory / "lib" / "helper.so"
        self.library.parent.mkdir()
        self.library.write_bytes(some_library().read_bytes())
        self.listener = Listener()
        self.acts = acts(self.victim, self.listener.port, self.library)

    def tried(self) -> dict[str, str]:
        """Every escape, after the control write to the candidate's own directory."""
        return {"own_directory": OWN_DIRECTORY, **self.acts}

    def assert_untouched(self) -> None:
        assert self.victim.read_text() == VICTIM_TEXT
        assert self.listener.accepted == 0

    def assert_all_refused(self, message: str) -> None:
        """hostile_code_trying_all(self.tried())'s message: the control went through, every
        escape was refused (not by a missing name), and nothing of the user's was reached."""
        found = outcomes(message)
        assert found.pop("own_directory") == "DONE", message[-2000:]
        assert sorted(found) == sorted(self.acts)
        assert all(o.startswith("REFUSED") and "NameError" not in o for o in found.values()), \
            found
        self.assert_untouched()

    def close(self) -> None:
        self.listener.close()


def some_library() -> Path:
    """A real shared library to copy and load (the C extension _ctypes)."""
    import _ctypes

    return Path(_ctypes.__file__)


def require_confinement() -> None:
    """Skip, with the reason, where this machine cannot confine candidate code."""
    status = confine.status()
    if not status.confined:
        pytest.skip(f"candidate code cannot be confined here: {status.reason}")
