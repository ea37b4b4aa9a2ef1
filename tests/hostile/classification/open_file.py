# expect: 'open' is not allowed
def write_file(logits, targets):
    open("pwned.txt", "w").write("x")
    return F.cross_entropy(logits, targets, reduction="none")
