# expect: it must take (policy_chosen_logps
# ruff: noqa
def loss(logits, beta):
    return -F.logsigmoid(beta * logits)
