# expect: the method form (self, ...) is not accepted for a classification loss
def method(self, logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
