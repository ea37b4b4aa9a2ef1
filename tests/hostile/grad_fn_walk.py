# expect: attribute '.grad_fn' is not allowed
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    node = rho.grad_fn.next_functions
    return -F.logsigmoid(beta * rho)
