# expect: torch.save is not available
def leak_logits(logits, targets):
    torch.save(logits, "pwned_logits.pt")
    return F.cross_entropy(logits, targets, reduction="none")
