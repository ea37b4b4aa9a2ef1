# expect: torch.manual_seed is not available
def reseed(logits, targets):
    torch.manual_seed(0)
    return F.cross_entropy(logits, targets, reduction="none")
