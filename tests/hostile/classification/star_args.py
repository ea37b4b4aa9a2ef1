# expect: no *args or **kwargs
def star(*args):
    return F.cross_entropy(args[0], args[1], reduction="none")
