# expect: attribute '.register_hook' is not allowed
def hook(logits, targets):
    logits.register_hook(lambda grad: grad * 0)
    return F.cross_entropy(logits, targets, reduction="none")
