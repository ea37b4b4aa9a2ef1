# expect: not deterministic
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta, calls=[]):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    calls.append(1)
    return -F.logsigmoid(beta * rho) * len(calls)
