# expect: timed out | of CPU time
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    while True:
        pass
    return -F.logsigmoid(beta * rho)
