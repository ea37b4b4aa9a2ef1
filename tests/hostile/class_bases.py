# expect: attribute '__subclasses__' is not allowed
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    classes = ().__class__.__bases__[0].__subclasses__()
    return -F.logsigmoid(beta * rho)
