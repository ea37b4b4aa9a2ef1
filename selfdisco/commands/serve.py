"""`selfdisco serve`: run a vLLM server in the foreground, to share between runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.llm.backend import free_port
from selfdisco.llm.models import resolve_model
from selfdisco.llm.server import VLLMServer, sigterm_as_interrupt
from selfdisco.rundir.paths import checkpoints_dir

HELP = "run a vLLM server in the foreground (Ctrl-C or SIGTERM stops it and all it started)"

HEALTH_CHECK_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a bundled model name (see `selfdisco models`), a checkpoint "
                             "directory or a Hugging Face id")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 to serve other machines)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="serve a PEFT LoRA adapter under NAME (repeatable)")
    parser.add_argument("--max-lora-rank", type=int, default=16,
                        help="largest LoRA rank that can be loaded (default 16)")
    parser.add_argument("--dtype", default="auto",
                        help="what the model computes in: auto (float32 on CPU, bfloat16 on a "
                             "GPU), float32, bfloat16 or float16")
    parser.add_argument("--sleep-mode", action=argparse.BooleanOptionalAction, default=None,
                        help="GPU only: enable vLLM's /sleep and /wake_up (development routes, "
                             "so loopback hosts only; default: on when --host is loopback)")
    parser.add_argument("--no-check-numerics", action="store_true",
                        help="skip comparing the server with transformers before serving")
    parser.add_argument("--log", type=Path, default=None,
                        help="server log file (default: checkpoints/serve/server-PORT.log)")


def parse_adapters(values: list[str]) -> dict[str, str]:
    """NAME=PATH pairs; each PATH must be a PEFT adapter directory."""
    adapters: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UserError(f"--adapter {value!r}: expected NAME=PATH")
        if name in adapters:
            raise UserError(f"--adapter: the name {name!r} is given twice")
        if not (Path(path).expanduser() / "adapter_config.json").is_file():
            raise UserError(f"--adapter {value!r}: {path} is not a LoRA adapter directory "
                            "(no adapter_config.json)")
        adapters[name] = str(Path(path).expanduser().resolve())
    return adapters


def run(args: argparse.Namespace) -> int:
    adapters = parse_adapters(args.adapter)
    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a valid port")
    port = args.port or free_port()
    log_path = args.log or checkpoints_dir() / "serve" / f"server-{port}.log"
    server = VLLMServer(resolve_model(args.model), log_path=log_path, port=port, host=args.host,
                        adapters=adapters, max_lora_rank=args.max_lora_rank,
                        dtype=args.dtype, check_numerics=not args.no_check_numerics,
                        enable_sleep_mode=args.sleep_mode)
    with sigterm_as_interrupt():
        try:
            print(f"starting vLLM for {server.model_path} (log: {log_path})", flush=True)
            with server:
                if server.numerics is not None:
                    print(server.numerics.summary(), flush=True)
                names = ", ".join([server.model_name, *adapters])
                print(f"serving {names} at {server.base_url}", flush=True)
                print(f"use it with --proposer {server.base_url}; Ctrl-C stops it", flush=True)
                while True:
                    time.sleep(HEALTH_CHECK_S)
                    if server.ensure_healthy():
                        print(f"the server crashed and was restarted (see {log_path})",
                              flush=True)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0
