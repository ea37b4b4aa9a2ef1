"""The proposer's self-improvement: promotion after a generation (promotion.py), the duel that
decides it (duel.py), the proposer LoRA trained on its own answers (selftrain.py), and each
proposer's measured record (lineage.py)."""
