"""LoRA preference training under a runtime loss, with a shared reference log-prob cache:
train_adapter (runner.py, imports torch) with its settings (settings.py), result (result.py),
data (data.py), trainer (trainer.py) and cache (refcache.py)."""
