# expect: torch.from_file is not available
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    x = torch.from_file('/etc/passwd', size=10)
    return -F.logsigmoid(beta * rho)
