"""The paper's losses as a library, each written as a candidate in the project's convention.

Scores are MT-Bench means reported in the DiscoPOP paper (beta = 0.05): the burn-in baselines and
the discovered losses of its Table 1. `lrml` is the beta-consistent form (equal to TRL's
"discopop" loss at every beta); `lrml_original` is the code that was scored during discovery,
written in the paper's method form (it reads self.beta). The two agree at beta = 0.05.

kto_pair returns shape (B,): 0.5 * (chosen term + rejected term) per pair. The paper's form
concatenates the two terms to shape (2B,); both have the same mean, hence the same training loss,
and (B,) keeps one shape contract for every loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfdisco.errors import UserError
from selfdisco.losses.candidate import Candidate

SIGNATURE = ("(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,\n"
             "        reference_rejected_logps, beta)")
RHO = ("    rho = (policy_chosen_logps - reference_chosen_logps) - (\n"
       "        policy_rejected_logps - reference_rejected_logps)\n")
PAPER = "Lu et al. 2024, Discovering Preference Optimization Algorithms (DiscoPOP)"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    full_name: str
    formula: str
    source: str
    paper_score: float | None  # MT-Bench in the DiscoPOP paper
    candidate: Candidate


def _entry(name: str, full_name: str, formula: str, source: str, score: float | None,
           thought: str, body: str, *, method_form: bool = False) -> CatalogEntry:
    if method_form:
        header = (f"def {name}(self, policy_chosen_logps, policy_rejected_logps,\n"
                  f"        reference_chosen_logps, reference_rejected_logps):\n"
                  f"    beta = self.beta\n")
    else:
        header = f"def {name}{SIGNATURE}:\n"
    code = header + RHO + body
    return CatalogEntry(name, full_name, formula, source, score,
                        Candidate(thought=thought, name=name, code=code))


_ENTRIES = [
    _entry("dpo", "Direct Preference Optimization", "f(rho) = -logsigmoid(beta * rho)",
           f"Rafailov et al. 2023; score from {PAPER}, burn-in", 7.8875,
           "Logistic loss on the scaled log-ratio difference.",
           "    return -F.logsigmoid(beta * rho)\n"),
    _entry("hinge", "SLiC (hinge loss)", "f(rho) = max(0, 1 - beta * rho)",
           f"Zhao et al. 2023 (SLiC-HF); score from {PAPER}, burn-in", 7.88125,
           "Hinge loss: no gradient once the margin beta * rho exceeds 1.",
           "    return torch.relu(1 - beta * rho)\n"),
    _entry("ipo", "Identity Preference Optimization", "f(rho) = (rho - 1 / (2 * beta))^2",
           f"Azar et al. 2023; score from {PAPER}, burn-in", 7.84,
           "Squared loss pulling rho towards 1 / (2 beta) instead of pushing it to infinity.",
           "    return (rho - 1 / (2 * beta)) ** 2\n"),
    _entry("kto_pair", "KTO, paired form",
           "z_c = max(0, mean(log pi(y_w) - log ref(y_w))), z_r likewise for y_l;\n"
           "f = 0.5 * [(1 - sigmoid(beta * (r_c - z_r))) + (1 - sigmoid(beta * (z_c - r_r)))]\n"
           "(per pair; the paper concatenates the two terms to shape 2B, same mean)",
           f"Ethayarajh et al. 2024; score from {PAPER}, burn-in", 7.603125,
           "Prospect-theoretic loss with batch KL reference points, paired form.",
           "    chosen_logratios = policy_chosen_logps - reference_chosen_logps\n"
           "    rejected_logratios = policy_rejected_logps - reference_rejected_logps\n"
           "    chosen_kl = chosen_logratios.mean().clamp(min=0)\n"
           "    rejected_kl = rejected_logratios.mean().clamp(min=0)\n"
           "    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - rejected_kl))\n"
           "    rejected_losses = 1 - torch.sigmoid(beta * (chosen_kl - rejected_logratios))\n"
           "    return 0.5 * (chosen_losses + rejected_losses)\n"),
    _entry("lrml", "Log Ratio Modulated Loss (DiscoPOP), beta-consistent form",
           "x = beta * rho, m = sigmoid(x / tau), tau = 0.05;\n"
           "f = (1 - m) * -logsigmoid(x) + m * exp(-x)",
           f"{PAPER}, beta-consistent form (TRL loss_type 'discopop'); score of the original",
           7.916,
           "Blend of the logistic and exponential losses, gated by the scaled log-ratio.",
           "    tau = 0.05\n"
           "    logits = beta * rho\n"
           "    gate = torch.sigmoid(logits / tau)\n"
           "    return (1 - gate) * -F.logsigmoid(logits) + gate * torch.exp(-logits)\n"),
    _entry("lrml_original", "Log Ratio Modulated Loss (DiscoPOP), original form",
           "x = beta * rho, m = sigmoid(rho);\nf = (1 - m) * -logsigmoid(x) + m * exp(-x)",
           f"{PAPER}, Table 1: the code scored during discovery (method form, self.beta)",
           7.916,
           "Blend of the logistic and exponential losses, gated by the raw log-ratio.",
           "    gate = torch.sigmoid(rho)\n"
           "    logistic = -F.logsigmoid(beta * rho)\n"
           "    exponential = torch.exp(-beta * rho)\n"
           "    return (1 - gate) * logistic + gate * exponential\n",
           method_form=True),
    _entry("padll", "Performance Adaptive Decay Logistic Loss",
           "w = 0.9 * (1 - 0.5 * [rho < 0]); f = w * -logsigmoid(beta * rho)",
           f"{PAPER}, Table 1", 7.941,
           "Logistic loss with a smaller weight on pairs the policy still gets wrong.",
           "    weight = 0.9 * (1 - 0.5 * (rho < 0).to(rho.dtype))\n"
           "    return weight * -F.logsigmoid(beta * rho)\n"),
    _entry("cell", "Combined Exponential + Logistic Loss",
           "f = 0.5 * exp(-beta * rho) + 0.5 * -logsigmoid(beta * rho)",
           f"{PAPER}, Table 1", 7.925,
           "Even mix of the exponential and logistic losses.",
           "    logits = beta * rho\n"
           "    return 0.5 * torch.exp(-logits) + 0.5 * -F.logsigmoid(logits)\n"),
    _entry("aql", "Adaptive Quantile Loss",
           "m = 0.5 + 0.01 * (sigmoid(mean_batch(rho)) - 0.5); q = sigmoid(-beta * (rho - m));\n"
           "f = q * -logsigmoid(beta * rho) + (1 - q) * max(0, 1 - beta * rho)",
           f"{PAPER}, Table 1 (original form)", 7.953,
           "Blend of logistic and hinge losses with a batch-adaptive margin.",
           "    margin = 0.5 + 0.01 * (torch.sigmoid(rho.mean()) - 0.5)\n"
           "    q = torch.sigmoid(-beta * (rho - margin))\n"
           "    logistic = -F.logsigmoid(beta * rho)\n"
           "    hinge = torch.relu(1 - beta * rho)\n"
           "    return q * logistic + (1 - q) * hinge\n"),
    _entry("aqfl", "Adaptive Quantile Feedback Loss",
           "s = std_batch(rho); a = s * mean_batch(sigmoid(-rho));\n"
           "a = a + 0.05 * (sigmoid(mean_batch(rho)) - a); r = sigmoid(0.1 * |rho - a|);\n"
           "f = r * -logsigmoid(beta * rho) + (1 - r) * max(0, 1 - beta * rho)",
           f"{PAPER}, Table 1 (original form)", 7.931,
           "Logistic/hinge blend weighted by the distance to a batch-adaptive quantile.",
           "    spread = rho.std()\n"
           "    anchor = spread * torch.sigmoid(-rho).mean()\n"
           "    anchor = anchor + 0.05 * (torch.sigmoid(rho.mean()) - anchor)\n"
           "    r = torch.sigmoid(0.1 * (rho - anchor).abs())\n"
           "    logistic = -F.logsigmoid(beta * rho)\n"
           "    hinge = torch.relu(1 - beta * rho)\n"
           "    return r * logistic + (1 - r) * hinge\n"),
    _entry("dbaql", "Dynamic Blended Adaptive Quantile Loss",
           "c = sigmoid(var_batch(rho)) (unbiased);\n"
           "f = c * -logsigmoid(beta * rho / 0.9) + (1 - c) * exp(-0.9 * beta * rho)",
           f"{PAPER}, Table 1 (original form)", 7.978,
           "Logistic/exponential blend weighted by the batch variance of rho.",
           "    c = torch.sigmoid(rho.var())\n"
           "    logistic = -F.logsigmoid(beta * rho / 0.9)\n"
           "    exponential = torch.exp(-0.9 * beta * rho)\n"
           "    return c * logistic + (1 - c) * exponential\n"),
    _entry("pfl", "Policy Focused Loss",
           "if log pi(y_w) > log pi(y_l): 0.5 * -logsigmoid(rho), else 2 * max(0, 1 - rho)\n"
           "(no beta)",
           f"{PAPER}, Table 1 (original form)", 7.900,
           "Soft logistic loss where the policy already prefers the chosen answer, a strong "
           "hinge elsewhere.",
           "    prefers_chosen = policy_chosen_logps > policy_rejected_logps\n"
           "    return torch.where(prefers_chosen, 0.5 * -F.logsigmoid(rho),\n"
           "                       2 * torch.relu(1 - rho))\n"),
]

CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in _ENTRIES}


def names() -> list[str]:
    return list(CATALOG)


def get(name: str) -> CatalogEntry:
    """The catalog entry called `name`; UserError naming the choices when there is none."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UserError(f"unknown loss '{name}'; the catalog has: {', '.join(CATALOG)}") from None


def catalog_entry(name: str) -> dict:
    """A catalog loss as the loop's burn-in needs it: name, full name, code."""
    try:
        entry = get(name)
    except (KeyError, UserError):
        raise UserError(f"burn-in loss {name!r} is not in the catalog; see `selfdisco losses "
                        "list`") from None
    return {"name": entry.name, "full_name": entry.full_name, "code": entry.candidate.code}
