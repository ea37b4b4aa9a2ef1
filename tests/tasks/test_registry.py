"""The task registry: names, lazy resolution, the protocols tasks declare, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfdisco import tasks
from selfdisco.errors import UserError
from selfdisco.registry import Registry
from selfdisco.tasks.base import KINDS


def test_known_tasks_follow_the_protocol_of_their_kind():
    assert tasks.task_names()[:3] == ["sentiment", "mtbench", "digits"]
    assert tasks.DEFAULT_TASK == "sentiment"
    for name in tasks.task_names():
        task = tasks.get_task(name)
        assert task.name == name
        assert isinstance(task, KINDS[task.kind])
        assert isinstance(task.needs_judge, bool)
    assert [tasks.get_task(n).kind for n in ("sentiment", "mtbench", "digits")] == [
        "preference", "preference", "classification"]
    assert tasks.get_task("mtbench").needs_judge and not tasks.get_task("sentiment").needs_judge
    assert tasks.get_task("sentiment") is tasks.get_task("sentiment")


class NoKind:
    name = "no-kind"


class HalfPreference:
    """Declares a preference task but has no preference data."""

    name = "half"
    kind = "preference"
    description = "half a task"
    needs_judge = False
    pairs_version = 1

    def check_options(self, preset, options):
        pass

    def score(self, ctx, adapter_path=None):
        pass

    def train_settings(self, preset):
        pass


@pytest.mark.parametrize("attr", ["NoKind", "HalfPreference"])
def test_a_task_that_does_not_follow_its_protocol_is_refused(monkeypatch, attr):
    monkeypatch.setitem(tasks.TASKS.targets, "broken", f"{__name__}:{attr}")
    with pytest.raises(TypeError, match="'broken'.*must declare a kind.*protocol"):
        tasks.get_task("broken")


def test_unknown_task_error_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        tasks.get_task("imdb")
    assert "imdb" in str(err.value)
    for name in ("sentiment", "mtbench", "digits"):
        assert name in str(err.value)


def test_a_registry_checks_the_target_form():
    with pytest.raises(ValueError, match="module:attr"):
        Registry("task", {"broken": "selfdisco.tasks.digits.task.DigitsTask"})


def test_importing_the_registry_imports_no_task_and_no_heavy_library():
    code = ("import json, sys; import selfdisco.tasks; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('selfdisco.tasks.', "
            "'torch', 'transformers', 'vllm', 'sklearn', 'vaderSentiment')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == ["selfdisco.tasks.base"]
