# expect: attribute '.data' is not allowed
def rewrite_labels(logits, targets):
    targets.data.fill_(0)
    return F.cross_entropy(logits, targets, reduction="none")
