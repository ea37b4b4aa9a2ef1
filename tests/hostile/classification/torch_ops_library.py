# expect: torch.ops is not available
def native_code(logits, targets):
    torch.ops.load_library("pwned.so")
    return F.cross_entropy(logits, targets, reduction="none")
