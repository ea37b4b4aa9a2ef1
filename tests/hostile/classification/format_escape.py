# expect: attribute '.format' is not allowed
def format_walk(logits, targets):
    found = '{0.__class__.__mro__[1].__subclasses__}'.format(logits)
    return F.cross_entropy(logits, targets, reduction="none")
