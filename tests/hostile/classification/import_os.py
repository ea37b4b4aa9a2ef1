# expect: import of 'os' is not allowed
import os


def import_os(logits, targets):
    os.system("touch pwned")
    return F.cross_entropy(logits, targets, reduction="none")
