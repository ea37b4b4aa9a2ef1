"""Search beyond one candidate at a time: classification losses (digits discovery),
multi-fidelity evaluation (fidelity.py) and the islands population (population.py)."""
