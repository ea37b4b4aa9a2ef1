"""The language models: their weights (models.py), the vLLM server selfdisco manages (server.py),
the HTTP client that records every request (client.py, cache.py), offline replay (replay.py),
the endpoint a source value opens (endpoint.py), and what fits where (machine.py, sizes.py,
topology.py)."""
