# expect: torch.cuda is not available
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    n = torch.cuda.device_count()
    return -F.logsigmoid(beta * rho)
