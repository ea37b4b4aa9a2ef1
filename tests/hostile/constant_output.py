# expect: the loss is constant
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return (policy_chosen_logps - policy_chosen_logps.detach()) + (policy_rejected_logps - policy_rejected_logps.detach()) + 1.0
