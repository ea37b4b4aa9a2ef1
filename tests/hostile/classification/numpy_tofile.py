# expect: attribute '.numpy' is not allowed
def write_numpy(logits, targets):
    logits.detach().numpy().tofile("pwned.bin")
    return F.cross_entropy(logits, targets, reduction="none")
