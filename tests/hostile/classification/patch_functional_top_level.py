# expect: assigning to attributes is not allowed
F.cross_entropy = lambda *a, **k: a[0].sum(dim=1) * 0


def patched(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
