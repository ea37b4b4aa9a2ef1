"""Setting a run up: the checks before anything starts (checks.py), the placement and memory plan
(plan.py), the run directory, servers and services the loop gets (start.py; digits.py for a
classification task), and the background process the TUI watches (background.py)."""
