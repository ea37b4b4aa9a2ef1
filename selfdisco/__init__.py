"""selfdisco: discover preference-optimization losses with open-weight LLMs.

The Python API (selfdisco/api.py) is loaded on first use, so `import selfdisco` stays light:
run, resume, load_archive, screen_loss, compile_loss, train_loss, export_loss.

Module map, top to bottom: a package imports only from those below it (the import-linter
contract in pyproject.toml, checked by scripts/test.sh).

    cli.py, commands/   the command line: one module per `selfdisco` command
    api.py              the Python API
    report.py           report.md of a run
    heldout/            after discovery: the reward-KL frontier, pairwise win rates, lm-eval
    export/             a discovered loss as loss.py + a TRL trainer + its recipe; train it again
    launch/             setting a run up: checks, placement plan, services, background process
    tui/                the terminal UI and the headless printer, both reading the event log
    discovery/          the loop: propose, screen, evaluate, record, promote
      proposer/           promotion, duel, proposer self-training, lineage
      search/             multi-fidelity, islands
    execution/          executors (local, Ray), the worker process, jobs and results
    tasks/              sentiment, mtbench, digits/: data, training recipe, fitness; the judge
    train/              LoRA preference training under a runtime loss (TRL)
    llm/                model weights, the vLLM server, the recording client, replay, sizes
    losses/             candidates: parse, static check, sandboxed screening, catalog, compiler
    rundir/             the run directory: paths, archive, events, control, loss shapes
    config.py, presets.py                    the run's settings (a schema) and presets
    stats.py, formatting.py, seeds.py, registry.py, datafiles.py, progress.py, errors.py
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
