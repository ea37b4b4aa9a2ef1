# expect: torch.library is not available
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    lib = torch.library.Library('x', 'DEF')
    return -F.logsigmoid(beta * rho)
