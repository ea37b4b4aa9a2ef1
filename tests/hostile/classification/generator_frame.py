# expect: attribute '.gi_frame' is not allowed
def frame_walk(logits, targets):
    g = (x for x in [1])
    caller = g.gi_frame.f_back
    return F.cross_entropy(logits, targets, reduction="none")
