"""The digits candidates' static check: the loss library's allow-list with the classification
signature, before any sandbox runs (no sandbox in these tests: one that is reached fails)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from selfdisco.losses import Candidate, check_code
from selfdisco.tasks.base import EvaluationError
from selfdisco.tasks.digits import screening
from selfdisco.tasks.digits.task import compile_classification_loss

TESTS = Path(__file__).resolve().parents[2]
HOSTILE = TESTS / "hostile" / "classification"
RECORDED_ARCHIVE = TESTS / "data" / "runs" / "digits" / "archive.sqlite"
# Escapes the task's own deny-list check let through before it used the allow-list.
ESCAPES = ("torch_save", "torch_save_in_try", "torch_ops_library", "generator_frame",
           "format_escape", "patch_functional")

# Losses an LLM commonly writes for classification: each must pass the check and compute.
COMMON = {
    "poly1": '''
import torch
import torch.nn.functional as F

def poly1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Poly-1 loss (Leng et al., 2022)."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    pt = F.softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return ce + 1.0 * (1 - pt)
''',
    "manual_smoothing": '''
def manual_smoothing(logits, targets):
    eps = 0.1
    logp = torch.log_softmax(logits, dim=1)
    with torch.no_grad():
        true_dist = torch.zeros_like(logp)
        true_dist.fill_(eps / (logits.size(1) - 1))
        true_dist.scatter_(1, targets.unsqueeze(1), 1 - eps)
    return torch.sum(-true_dist * logp, dim=-1)
''',
    "symmetric_ce": '''
def symmetric_ce(logits, targets):
    probs = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
    one_hot = F.one_hot(targets, num_classes=logits.shape[1]).float()
    rce = -(probs * torch.log(one_hot.clamp(min=1e-4))).sum(dim=1)
    return F.cross_entropy(logits, targets, reduction="none") + 0.5 * rce
''',
    "generalized_ce": '''
def generalized_ce(logits, targets):
    q = 0.7
    y = torch.eye(logits.shape[1], device=logits.device, dtype=logits.dtype)[targets]
    p = (F.softmax(logits, dim=1) * y).sum(dim=1).clamp_min(1e-6)
    return (1 - p ** q) / q
''',
    "additive_margin": '''
def additive_margin(logits, targets):
    shifted = logits.scatter_add(1, targets[:, None], torch.full_like(logits[:, :1], -0.35))
    return F.cross_entropy(2.0 * shifted, targets, reduction="none")
''',
    "hardest_negative": '''
def hardest_negative(logits, targets):
    batch = torch.arange(logits.size(0), device=logits.device)
    true = logits[batch, targets]
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[batch, targets] = False
    hardest = logits.masked_fill(~mask, float("-inf")).max(dim=1).values
    second = torch.topk(logits, k=2, dim=1).indices
    return F.softplus(hardest - true) + 0.0 * second.float().sum(dim=1)
''',
    "taylor_ce": '''
def taylor_ce(logits, targets):
    p = logits.softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(-1)
    loss = torch.zeros_like(p)
    for k in range(1, 4):
        loss = loss + (1 - p) ** k / k
    return loss
''',
    "confidence_penalty": '''
import math

def confidence_penalty(logits, targets):
    logp = F.log_softmax(logits, dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    return F.nll_loss(logp, targets, reduction="none") - 0.1 * entropy / math.log(logits.shape[1])
''',
    "multi_margin": '''
def multi_margin(logits, targets):
    hinge = F.multi_margin_loss(logits, targets, reduction="none")
    return hinge + F.cross_entropy(logits, targets, reduction="none")
''',
    "kl_to_smoothed": '''
def kl_to_smoothed(logits, targets):
    C = logits.shape[-1]
    target = F.one_hot(targets, C).to(logits.dtype) * 0.9 + 0.1 / C
    weight = torch.bincount(targets, minlength=C).float().index_select(0, targets)
    kl = F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="none").sum(-1)
    return kl / weight
''',
    "take_along": '''
def take_along(logits, targets):
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    ranked, order = logp.sort(dim=1, descending=True)
    return -torch.take_along_dim(logp, targets[:, None], dim=1).squeeze(1)
''',
}


class UnreachableSandbox:
    """Stands in for the sandbox: the static check must refuse before anything runs."""

    def run(self, *args, **kwargs):
        raise AssertionError("the static check let hostile code through to the sandbox")


def hostile_files() -> dict[str, tuple[str, str]]:
    """name -> (code, expected reason) for each file of tests/hostile/classification."""
    cases = {}
    for path in sorted(HOSTILE.glob("*.py")):
        code = path.read_text()
        first = code.splitlines()[0]
        assert first.startswith("# expect: "), path
        cases[path.stem] = (code, first.removeprefix("# expect: "))
    return cases


HOSTILE_CASES = hostile_files()


def test_the_hostile_set_holds_the_escapes_of_the_old_check():
    assert set(ESCAPES) <= set(HOSTILE_CASES)


@pytest.mark.parametrize("name", sorted(HOSTILE_CASES))
def test_hostile_code_is_refused_before_the_sandbox(name):
    code, reason = HOSTILE_CASES[name]
    result = screening.screen(Candidate("", name, code), sandbox=UnreachableSandbox())
    assert not result.ok and reason in result.reason, result.reason
    assert result.fingerprint is None and "\n" not in result.reason


@pytest.mark.parametrize("name", sorted(HOSTILE_CASES))
def test_hostile_code_is_refused_by_the_task_compiler(name):
    code, reason = HOSTILE_CASES[name]
    with pytest.raises(EvaluationError) as err:
        compile_classification_loss(code)
    assert reason in str(err.value)


@pytest.mark.parametrize("name", sorted(COMMON))
def test_common_classification_losses_pass_and_compute(name):
    assert check_code(COMMON[name], kind="classification").function_name == name
    loss_fn = compile_classification_loss(COMMON[name])
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = loss_fn(logits, torch.tensor([0, 1, 2, 3, 4, 5]))
    assert out.shape == (6,) and bool(torch.isfinite(out).all())
    out.mean().backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_the_catalog_passes_the_check():
    for name in screening.CATALOG:
        code = screening.catalog_entry(name)["code"]
        assert check_code(code, kind="classification").function_name == name


def test_every_candidate_the_recorded_run_scored_passes_the_check():
    with sqlite3.connect(RECORDED_ARCHIVE) as db:
        rows = db.execute("SELECT id, status, code FROM candidates WHERE code IS NOT NULL")
        scored = [(i, code) for i, status, code in rows if status == "scored"]
    assert len(scored) >= 2
    for _id, code in scored:
        check_code(code, kind="classification")


def test_an_error_at_the_top_level_is_the_candidates():
    code = "SCALE = 1 / 0\ndef f(logits, targets):\n    return logits.sum(dim=1) * SCALE\n"
    with pytest.raises(EvaluationError, match="the code does not run: ZeroDivisionError"):
        compile_classification_loss(code)
