"""digits: classification losses on scikit-learn's digits (the paper's classification case
study): the task (task.py), its candidates' catalog and static check (screening.py) and the
checks run in the sandbox (checks.py)."""
