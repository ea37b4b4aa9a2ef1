# expect: loops may run at most
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    total = 0.0
    for i in range(10**12):
        total += i
    return -F.logsigmoid(beta * rho)
