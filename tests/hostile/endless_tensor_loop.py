# expect: timed out | of CPU time
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    x = rho.detach()  # no autograd graph, so memory stays flat and only time runs out
    while bool((x > -1e30).all()):
        x = x * 1.0
    return -F.logsigmoid(beta * x)
