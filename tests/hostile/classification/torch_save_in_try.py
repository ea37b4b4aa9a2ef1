# expect: torch.save is not available
def quiet_leak(logits, targets):
    try:
        torch.save(logits, "pwned_logits.pt")
    except Exception:
        pass
    return F.cross_entropy(logits, targets, reduction="none")
