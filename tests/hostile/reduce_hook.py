# expect: attribute '__reduce_ex__' is not allowed
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    r = rho.__reduce_ex__(2)
    return -F.logsigmoid(beta * rho)
