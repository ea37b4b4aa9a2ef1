# expect: import of 'os' is not allowed
# ruff: noqa
import os
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    os.system('touch pwned')
    return -F.logsigmoid(beta * rho)
