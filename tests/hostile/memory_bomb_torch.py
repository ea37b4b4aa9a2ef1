# expect: out of memory
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    big = torch.ones(10**11)
    return -F.logsigmoid(beta * rho) + big.sum()
