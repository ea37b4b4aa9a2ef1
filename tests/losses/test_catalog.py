"""The catalog: check values from the paper, and equality with TRL's own DPO losses."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.optimize import brentq

from selfdisco.errors import UserError
from selfdisco.losses import Candidate, catalog, compile_loss, load_loss

PAPER_SCORES = {"dpo": 7.8875, "hinge": 7.88125, "ipo": 7.84, "kto_pair": 7.603125,
                "lrml": 7.916, "lrml_original": 7.916, "padll": 7.941, "cell": 7.925,
                "aql": 7.953, "aqfl": 7.931, "dbaql": 7.978, "pfl": 7.900}


def curve(name: str, beta: float):
    """rho -> (loss, d loss / d rho) in float64, rho as the log-ratio with zero reference."""
    loss_fn = compile_loss(catalog.get(name).candidate.code)

    def value_and_slope(rho: float) -> tuple[float, float]:
        chosen = torch.tensor([rho], dtype=torch.float64, requires_grad=True)
        zeros = torch.zeros(1, dtype=torch.float64)
        out = loss_fn(chosen, zeros, zeros, zeros, beta)
        out.sum().backward()
        return out.item(), chosen.grad.item()

    return value_and_slope


def test_catalog_holds_the_papers_losses_with_their_scores():
    assert {name: catalog.get(name).paper_score for name in catalog.names()} == PAPER_SCORES
    for name in catalog.names():
        entry = catalog.get(name)
        assert entry.full_name and entry.formula and entry.source
        assert entry.candidate.name == name and entry.candidate.thought


@pytest.mark.parametrize("name", ["lrml", "lrml_original"])
def test_lrml_check_values_at_beta_005(name):
    value_and_slope = curve(name, 0.05)
    assert value_and_slope(0.0)[0] == pytest.approx(0.846574, abs=1e-6)
    # Find every stationary point on [-8, 8] from sign changes of the slope.
    grid = [-8 + 0.01 * i for i in range(1601)]
    slopes = [value_and_slope(r)[1] for r in grid]
    roots = [brentq(lambda r: value_and_slope(r)[1], a, b, xtol=1e-10)
             for a, b, sa, sb in zip(grid, grid[1:], slopes, slopes[1:], strict=False)
             if sa * sb < 0]
    assert len(roots) == 2
    minimum, maximum = roots
    assert slopes[0] < 0 < value_and_slope(minimum + 0.1)[1]  # falls, then rises: a minimum
    assert value_and_slope(maximum + 0.1)[1] < 0  # rises, then falls: a maximum
    assert minimum == pytest.approx(-2.3714, abs=1e-4)
    assert value_and_slope(minimum)[0] == pytest.approx(0.78592, abs=1e-5)
    assert maximum == pytest.approx(1.4401, abs=1e-4)
    assert value_and_slope(maximum)[0] == pytest.approx(0.87829, abs=1e-5)


def test_lrml_forms_agree_at_beta_005_and_differ_elsewhere():
    for rho in (-7.0, -1.0, 0.5, 3.0):
        assert curve("lrml", 0.05)(rho)[0] == pytest.approx(curve("lrml_original", 0.05)(rho)[0])
    assert curve("lrml", 0.5)(2.0)[0] != pytest.approx(curve("lrml_original", 0.5)(2.0)[0])


def test_kto_pair_has_the_mean_of_the_papers_2b_form():
    loss_fn = compile_loss(catalog.get("kto_pair").candidate.code)
    generator = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (torch.randn(8, generator=generator, dtype=torch.float64) * 10 - 50
                      for _ in range(4))
    beta = 0.1
    chosen, rejected = pc - rc, pr - rr
    z_c, z_r = chosen.mean().clamp(min=0), rejected.mean().clamp(min=0)
    paper = torch.cat([1 - torch.sigmoid(beta * (chosen - z_r)),
                       1 - torch.sigmoid(beta * (z_c - rejected))])
    ours = loss_fn(pc, pr, rc, rr, beta)
    assert ours.shape == (8,)
    assert ours.mean().item() == pytest.approx(paper.mean().item(), abs=1e-12)


def test_load_loss_accepts_names_py_and_json_files(tmp_path):
    assert load_loss("dpo") == catalog.get("dpo").candidate
    code = catalog.get("ipo").candidate.code
    (tmp_path / "mine.py").write_text(code)
    assert load_loss(str(tmp_path / "mine.py")) == Candidate("", "mine", code)
    (tmp_path / "cand.json").write_text(json.dumps({"thought": "t", "name": "n", "code": code}))
    assert load_loss(str(tmp_path / "cand.json")) == Candidate("t", "n", code)
    (tmp_path / "bad.json").write_text("not json at all")
    for spec, message in (("nope", "unknown loss 'nope'"),
                          (str(tmp_path / "missing.py"), "file not found"),
                          (str(tmp_path / "bad.json"), "is not a JSON candidate")):
        with pytest.raises(UserError, match=message):
            load_loss(spec)
    with pytest.raises(UserError, match="the catalog has"):
        catalog.get("nope")


# --- equality with TRL's DPOTrainer._compute_loss ---------------------------------------------
@pytest.fixture(scope="module")
def smoke_model_and_data():
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfdisco.llm.models import resolve_model

    path = resolve_model("smoke-llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    words = ["great", "dull", "long", "short", "funny", "sad", "bright", "slow"]
    rows = [{"prompt": f"review {i}: the film was",
             "chosen": f" {words[i % 8]} and {words[(i * 3) % 8]}",
             "rejected": f" {words[(i + 5) % 8]}, {words[(i * 7) % 8]} and {words[i % 3]}"}
            for i in range(24)]
    return model, tokenizer, Dataset.from_list(rows)


def trl_and_catalog(parts, loss_type: str, catalog_name: str, beta: float, tmp_path):
    """Yield, per batch, TRL's own _compute_loss and the catalog loss on the same log-probs."""
    from trl import DPOConfig, DPOTrainer

    model, tokenizer, dataset = parts
    args = DPOConfig(output_dir=str(tmp_path), loss_type=[loss_type], beta=beta,
                     precompute_ref_log_probs=True, per_device_train_batch_size=8,
                     use_cpu=True, bf16=False, report_to=[], max_length=64,
                     save_strategy="no", logging_strategy="no")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    loss_fn = compile_loss(catalog.get(catalog_name).candidate.code)
    params = [p for p in model.parameters() if p.requires_grad]
    for seed, batch in enumerate(trainer.get_train_dataloader()):
        generator = torch.Generator().manual_seed(seed)
        pairs = batch["ref_chosen_logps"].shape[0]
        # Random reference log-probs spread rho over the range where the losses differ.
        batch["ref_chosen_logps"] = -40 + 12 * torch.randn(pairs, generator=generator)
        batch["ref_rejected_logps"] = -40 + 12 * torch.randn(pairs, generator=generator)
        captured = []
        handle = model.register_forward_hook(lambda m, a, out, into=captured: into.append(out))
        try:
            trl_loss = trainer._compute_loss(model, batch, False)
        finally:
            handle.remove()
        seq_len = batch["completion_mask"].shape[1] - 1
        logps = captured[-1].log_probs[:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        mode = "train" if model.training else "eval"
        # Our reading of the policy log-probs matches what TRL itself logged.
        logged = trainer._metrics[mode]["logps/chosen"][-1]
        assert chosen.mean().item() == pytest.approx(logged, rel=1e-5)
        ours = loss_fn(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                       beta).mean()
        trl_grads = torch.autograd.grad(trl_loss, params, retain_graph=True)
        our_grads = torch.autograd.grad(ours, params)
        rho = (chosen - batch["ref_chosen_logps"]) - (rejected - batch["ref_rejected_logps"])
        yield trl_loss, ours, trl_grads, our_grads, rho.detach()


@pytest.mark.parametrize("loss_type, name", [("sigmoid", "dpo"), ("discopop", "lrml")])
@pytest.mark.parametrize("beta", [0.05, 0.5])
def test_catalog_equals_trl(smoke_model_and_data, loss_type, name, beta, tmp_path):
    batches = 0
    for trl_loss, ours, trl_grads, our_grads, rho in trl_and_catalog(
            smoke_model_and_data, loss_type, name, beta, tmp_path):
        batches += 1
        assert float(rho.std()) > 5  # the batch really spreads over rho
        # Equal up to float32 rounding, which the two formulas may do in different orders:
        # a few units in the last place, and for a gradient element about 1e-6 of its
        # tensor's largest element, however much its own terms cancel.
        assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-7)
        for trl_grad, our_grad in zip(trl_grads, our_grads, strict=True):
            scale = float(trl_grad.abs().max())
            torch.testing.assert_close(our_grad, trl_grad, rtol=1e-5, atol=1e-5 * scale)
    assert batches == 3


def test_lrml_original_differs_from_trl_discopop_away_from_beta_005(smoke_model_and_data,
                                                                    tmp_path):
    trl_loss, ours, *_ = next(trl_and_catalog(smoke_model_and_data, "discopop", "lrml_original",
                                              0.5, tmp_path))
    assert ours.item() != pytest.approx(trl_loss.item(), rel=1e-3)
