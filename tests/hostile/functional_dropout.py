# expect: torch.nn.functional.dropout is not available
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return F.dropout(-F.logsigmoid(beta * rho), 0.5)
