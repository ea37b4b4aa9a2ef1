# expect: assigning to attributes is not allowed
def patch_cross_entropy(logits, targets):
    F.cross_entropy = lambda *a, **k: a[0].sum(dim=1) * 0
    return F.cross_entropy(logits, targets, reduction="none")
