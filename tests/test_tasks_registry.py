"""The task registry: names, lazy resolution, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfdisco import tasks
from selfdisco.errors import UserError


def test_known_tasks_resolve_to_tasks_with_their_interface():
    assert tasks.task_names()[:3] == ["sentiment", "mtbench", "digits"]
    assert tasks.DEFAULT_TASK == "sentiment"
    for name in tasks.task_names():
        task = tasks.get_task(name)
        assert task.name == name
        assert task.kind in ("preference", "classification")
        assert callable(task.evaluate) and callable(task.train_settings)
    assert tasks.get_task("sentiment") is tasks.get_task("sentiment")


def test_unknown_task_error_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        tasks.get_task("imdb")
    assert "imdb" in str(err.value)
    for name in ("sentiment", "mtbench", "digits"):
        assert name in str(err.value)


def test_register_checks_the_target_form():
    with pytest.raises(ValueError, match="module:attr"):
        tasks.register("broken", "selfdisco.tasks.digits.DigitsTask")


def test_importing_the_registry_imports_no_task_and_no_heavy_library():
    code = ("import json, sys; import selfdisco.tasks; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('selfdisco.tasks.', "
            "'torch', 'transformers', 'vllm', 'sklearn', 'vaderSentiment')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == ["selfdisco.tasks.base"]
