"""Where evaluations run: executors (local processes, Ray) run the worker (worker.py) on a Job and
read back its Result (records.py); classification losses run in one long-lived process
(classification.py)."""
