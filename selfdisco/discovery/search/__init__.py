"""Search strategies beyond one candidate at a time: multi-fidelity evaluation (fidelity.py) and
the islands population (population.py)."""
