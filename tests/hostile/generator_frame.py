# expect: attribute '.gi_frame' is not allowed
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    g = (x for x in [1]).gi_frame.f_globals
    return -F.logsigmoid(beta * rho)
