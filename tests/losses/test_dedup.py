"""De-duplication matches how training sees a loss: the pairs the tolerance is set from.

With AdamW, c * L (c > 0) trains like L and L + const trains exactly like L, so the fingerprint
keeps only the policy gradients and compares them up to a positive factor per beta
(selfdisco/losses/fingerprint.py). x = beta * rho below; distances measured with fingerprint
version 3 (float32, in the sandbox):

    pair                                    trains      distance
    1.1 x dpo           vs dpo              alike       4e-8
    0.5 x dpo           vs dpo              alike       3e-8
    100 x dpo           vs dpo              alike       3e-8
    dpo + 3             vs dpo              alike       3e-8
    log(1 + exp(-x))    vs dpo              alike       4e-8   (the same loss, other code)
    3 * (x - 1)**2      vs (x - 1)**2       alike       2e-8
    softplus(-1.005 x)  vs dpo              near        6e-4   (dpo at beta x 1.005)
    softplus(-1.01 x)   vs dpo              differs     1.3e-3
    softplus(-1.1 x)    vs dpo              differs     0.012
    catalog dbaql       vs dpo              differs     0.013  (closest catalog pair)
    softplus(-2 x)      vs dpo              differs     0.075  (dpo at twice the beta)
    dpo - 0.01 * (pc - rc) vs dpo           differs     0.091  (a small SFT term)
    catalog hinge       vs dpo              differs     0.235
    catalog ipo         vs dpo              differs     0.624
    catalog lrml        vs dpo              differs     0.537
    -dpo                vs dpo              opposite    1

Pairs that train alike sit at float32 rounding (below 1e-7); the closest pairs that train
differently start at 0.012 (dpo at 1.1 x its beta). The tolerance, 1e-3, leaves four orders of
magnitude above rounding (for code that computes the same loss another way) and a factor of
twelve below the closest different pair; a loss within it matches dpo's gradients as closely as
dpo at a beta changed by under 1% does. AdamW's invariance is exact only up to its epsilon
(1e-8): a loss scaled down until its gradients near 1e-8 trains more slowly, which this
comparison does not see.
"""

from __future__ import annotations

import pytest

from selfdisco.config import DiscoveryConfig
from selfdisco.losses import Candidate, catalog, screen
from selfdisco.losses.fingerprint import DUPLICATE_TOLERANCE
from selfdisco.losses.sandbox import Sandbox

SQUARE = "(x - 1) ** 2"
ALIKE = [("1.1 * F.softplus(-x)", "dpo"), ("0.5 * F.softplus(-x)", "dpo"),
         ("100 * F.softplus(-x)", "dpo"), ("F.softplus(-x) + 3", "dpo"),
         ("torch.log(1 + torch.exp(-x))", "dpo"), ("3 * (x - 1) ** 2", SQUARE)]
DIFFERENT = [("F.softplus(-1.01 * x)", "dpo", 1e-3), ("F.softplus(-1.1 * x)", "dpo", 0.01),
             ("F.softplus(-2 * x)", "dpo", 0.05),
             ("F.softplus(-x) - 0.01 * (pc - rc)", "dpo", 0.05),
             ("hinge", "dpo", 0.1), ("ipo", "dpo", 0.1), ("lrml", "dpo", 0.1),
             ("dbaql", "dpo", 0.01), ("-F.softplus(-x)", "dpo", 0.99)]


def code(expression: str) -> str:
    """A catalog loss's code, or a loss of x = beta * rho written as an expression."""
    if expression in catalog.names():
        return catalog.get(expression).candidate.code
    return ("import torch\nimport torch.nn.functional as F\n"
            "def loss(pc, pr, rc, rr, beta):\n"
            "    rho = (pc - rc) - (pr - rr)\n"
            "    x = beta * rho\n"
            f"    return {expression}\n")


@pytest.fixture(scope="module")
def fingerprint():
    box = Sandbox()
    cache = {}

    def of(expression: str):
        if expression not in cache:
            result = screen(Candidate("", "loss", code(expression)), sandbox=box)
            assert result.ok, result.reason
            cache[expression] = result.fingerprint
        return cache[expression]

    yield of
    box.close()


def test_the_run_default_is_the_fingerprint_tolerance():
    assert DiscoveryConfig().duplicate_tolerance == DUPLICATE_TOLERANCE


@pytest.mark.parametrize(("candidate", "known"), ALIKE)
def test_losses_that_train_alike_are_duplicates(fingerprint, candidate, known):
    distance = fingerprint(candidate).distance(fingerprint(known))
    assert distance < 1e-6
    assert distance * 100 < DUPLICATE_TOLERANCE  # a wide margin above float32 rounding
    assert fingerprint(known).is_duplicate(fingerprint(candidate))


@pytest.mark.parametrize(("candidate", "known", "at_least"), DIFFERENT)
def test_losses_that_train_differently_are_not_duplicates(fingerprint, candidate, known,
                                                          at_least):
    distance = fingerprint(candidate).distance(fingerprint(known))
    assert distance >= at_least
    assert not fingerprint(candidate).is_duplicate(fingerprint(known))
    assert distance == pytest.approx(fingerprint(known).distance(fingerprint(candidate)))


def test_the_closest_different_pair_clears_the_tolerance_with_a_margin(fingerprint):
    closest = min(fingerprint(c).distance(fingerprint(k)) for c, k, _ in DIFFERENT)
    assert closest > DUPLICATE_TOLERANCE
    beta_plus_tenth = fingerprint("F.softplus(-1.1 * x)").distance(fingerprint("dpo"))
    assert beta_plus_tenth > 10 * DUPLICATE_TOLERANCE


def test_a_slightly_different_beta_is_a_near_duplicate(fingerprint):
    assert fingerprint("F.softplus(-1.005 * x)").is_duplicate(fingerprint("dpo"))
