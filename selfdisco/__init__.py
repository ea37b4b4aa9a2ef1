"""selfdisco: discover preference-optimization losses with open-weight LLMs.

The Python API (selfdisco/api.py) is loaded on first use, so `import selfdisco` stays light:
run, resume, load_archive, screen_loss, compile_loss, train_loss, export_loss.
"""

__version__ = "0.1.0"

API = ("run", "resume", "load_archive", "screen_loss", "compile_loss", "train_loss",
       "export_loss")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from selfdisco import api  # lazy: `import selfdisco` stays light until the API is used

        return getattr(api, name)
    raise AttributeError(f"module 'selfdisco' has no attribute {name!r}")
