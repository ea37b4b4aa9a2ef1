# expect: torch.utils is not available
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    x = torch.utils.cpp_extension.load_inline('x', '')
    return -F.logsigmoid(beta * rho)
