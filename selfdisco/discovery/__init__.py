"""Discovery: the paper's Algorithm 1. The loop (loop.py) proposes (propose.py, with the
proposer's prompt from prompt.py), screens, evaluates (evaluation.py), records, and promotes a
better proposer (proposer/); search/ holds the strategies beyond one candidate at a time. The
steps see the loop through interface.Loop."""
