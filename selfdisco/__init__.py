"""selfdisco: discover preference-optimization losses with open-weight LLMs."""

__version__ = "0.1.0"
