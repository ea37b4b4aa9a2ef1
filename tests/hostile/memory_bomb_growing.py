# expect: out of memory | timed out
# ruff: noqa
def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
         reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    keep = []
    while True:
        keep.append(torch.ones(10**8))  # 400 MB filled each time: slow on a slow machine
    return -F.logsigmoid(beta * rho)
