# expect: timed out | of CPU time | out of memory
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    n = 2 ** (2 ** 40)  # slow and ever larger: the clock or the memory limit stops it first
    return -F.logsigmoid(beta * rho)
