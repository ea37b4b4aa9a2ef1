# expect: torch.nn.CrossEntropyLoss is not available
def module_loss(logits, targets):
    return torch.nn.CrossEntropyLoss(reduction="none")(logits, targets)
