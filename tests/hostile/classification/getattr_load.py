# expect: 'getattr' is not allowed
def load_by_name(logits, targets):
    getattr(torch, "lo" + "ad")("pwned.pt")
    return F.cross_entropy(logits, targets, reduction="none")
