# expect: '__import__' is not allowed
def import_os(logits, targets):
    __import__("os").system("touch pwned")
    return F.cross_entropy(logits, targets, reduction="none")
