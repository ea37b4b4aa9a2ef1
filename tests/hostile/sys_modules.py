# expect: name 'sys' is not defined
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    sys.modules['os'].system('touch pwned')
    return -F.logsigmoid(beta * rho)
