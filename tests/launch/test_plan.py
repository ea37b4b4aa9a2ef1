"""The placement and memory plan on described machines (no GPU needed): the paper's presets fit
on one 80 GB GPU and on eight, a machine too small is refused with the figures, and a run
applies the plan to its servers (devices, shares, tensor parallelism, sleep) or refuses it
before anything starts."""

from __future__ import annotations

import json
import os
import stat
from contextlib import ExitStack

import pytest

from selfdisco.cli import main
from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.launch.plan import USABLE, make_plan
from selfdisco.launch.start import _train_on, prepare_run_dir, start_run
from selfdisco.llm.machine import detect_machine, parse_machine
from selfdisco.llm.server import VLLMServer
from selfdisco.llm.sizes import GIB, KL_BATCH, kl_batch, model_size

GEMMA_7B_PARAMS = 8.54e9  # zephyr-7b-gemma's base, as published
QWEN25_7B_PARAMS = 7.62e9


def plan_for(preset: str, machine: str, **overrides):
    return make_plan(load_config(preset, overrides=overrides), parse_machine(machine))


def assert_within_every_gpu(plan) -> None:
    """Each server's share covers its estimate, and no GPU is over its usable part."""
    for slot in plan.servers:
        gib = plan.machine.gpu_gib[slot.devices[0]]
        assert slot.gpu_memory_utilization * gib >= sum(slot.memory_gib.values()) - 1e-6
    assert plan.loads
    for load in plan.loads:
        assert load.scoring_gib <= load.usable_gib + 1e-6
        assert (load.training_gib or 0.0) <= load.usable_gib + 1e-6


def test_the_sizes_of_the_preset_models_match_their_published_counts():
    gemma = model_size("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1")
    qwen = model_size("Qwen/Qwen2.5-7B-Instruct")
    assert gemma.params == pytest.approx(GEMMA_7B_PARAMS, rel=0.01)
    assert qwen.params == pytest.approx(QWEN25_7B_PARAMS, rel=0.01)
    # gemma-7b has full multi-head attention (16 KV heads of 256): 448 KiB a token in bf16.
    assert gemma.kv_bytes("bfloat16", 1) == 2 * 28 * 16 * 256 * 2


def test_the_kl_model_of_a_7b_policy_is_sized_by_rows_of_logits_measured_on_an_h200():
    # A random model of Qwen2.5-7B's shape, bf16, 32 samples of 1024 tokens, on an H200: 15.4
    # GiB at peak over the weights-free start (one row per pass); the estimate must cover it.
    assert kl_batch(1024, 152064) == 1
    assert kl_batch(128, 49152) == KL_BATCH  # the cpu preset's smollm2: batches unchanged
    kl = model_size("Qwen/Qwen2.5-7B-Instruct").kl_gib("bfloat16", 1024, on_gpu=True)
    assert 15.4 <= sum(kl.values()) <= 20


@pytest.mark.parametrize("preset", ["gpu-zephyr", "gpu-selfimprove"])
def test_a_gpu_preset_fits_on_one_80gb_gpu_with_the_policy_asleep_while_training(preset):
    plan = plan_for(preset, "1x80GB")
    assert plan.fits and plan.checked
    assert all(slot.devices == (0,) for slot in plan.servers)
    assert sum(s.gpu_memory_utilization for s in plan.servers) <= USABLE
    assert [s.name for s in plan.servers if s.sleeps] == ["policy"]
    assert plan.training.where == "gpu" and plan.training.devices == (0,)
    assert_within_every_gpu(plan)
    training = plan.loads[0].training_gib
    awake = sum(s.gpu_memory_utilization * 80 for s in plan.servers if not s.sleeps)
    assert training >= awake + sum(plan.training.job_gib.values())  # the job is counted


def test_one_server_serves_policy_and_proposer_when_they_are_one_model():
    plan = plan_for("gpu-selfimprove", "1x80GB")
    assert [(s.name, s.roles) for s in plan.servers] == [("policy", ["policy", "proposer"]),
                                                         ("judge", ["judge"])]
    zephyr = plan_for("gpu-zephyr", "1x80GB")
    assert [s.name for s in zephyr.servers] == ["policy", "proposer", "judge"]


@pytest.mark.parametrize("preset", ["gpu-zephyr", "gpu-selfimprove"])
def test_on_eight_gpus_each_server_and_the_training_get_gpus_of_their_own(preset):
    plan = plan_for(preset, "8x80GB")
    assert plan.fits
    devices = [s.devices for s in plan.servers] + [plan.training.devices]
    assert devices == [(i,) for i in range(len(devices))]
    assert all(s.gpu_memory_utilization == USABLE and not s.sleeps for s in plan.servers)
    assert_within_every_gpu(plan)
    ray = plan_for(preset, "8x80GB", executor="ray", workers=4)
    assert ray.fits and ray.training.devices == tuple(range(len(ray.servers), 8))


def test_four_local_jobs_on_one_gpu_are_refused_with_the_figures():
    plan = plan_for("gpu-zephyr", "8x80GB", workers=4)
    job = sum(plan.training.job_gib.values())
    assert not plan.fits
    assert f"4 training job(s) {4 * job:.1f}" in plan.refusal()
    assert "ray executor" in plan.refusal()


def test_gpu_zephyr_on_a_24gb_gpu_is_refused_with_the_figures(capsys):
    code = main(["plan", "--preset", "gpu-zephyr", "--machine", "24GB"])
    out, err = capsys.readouterr()
    plan = plan_for("gpu-zephyr", "24GB")
    policy = plan.server("policy")
    weights = GEMMA_7B_PARAMS * 2 / GIB
    assert code == 2 and "does not fit" in out
    assert err.startswith("error: the run does not fit on 1 x 24 GiB GPU")
    assert policy.memory_gib["weights"] == pytest.approx(weights, rel=0.01)
    assert f"{sum(policy.memory_gib.values()):.1f} GiB" in err
    assert f"({USABLE * 24:.1f} GiB)" in err and "To fit:" in err


def test_plan_prints_a_fitting_plan_and_json(capsys):
    assert main(["plan", "--preset", "gpu-zephyr", "--gpus", "1", "--gpu-memory-gib", "80"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("fits") and "sleeps while training" in out
    assert main(["plan", "--preset", "gpu-selfimprove", "--machine", "8x80GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and data["checked"]
    assert [s["devices"] for s in data["servers"]] == [[0], [1]]


def test_a_model_that_needs_two_gpus_gets_tensor_parallel_two():
    plan = plan_for("gpu-zephyr", "4x24GB")
    policy = plan.server("policy")
    assert policy.tensor_parallel_size == 2 and policy.devices == (0, 1)
    assert policy.memory_gib["weights"] == pytest.approx(GEMMA_7B_PARAMS * 2 / 2 / GIB, rel=0.01)


def test_a_cpu_plan_checks_memory_and_the_kv_cache():
    assert plan_for("cpu", "cpu:64GB").fits
    small = plan_for("cpu", "cpu:2GB")
    assert not small.fits and "the machine has 2.0 GiB" in small.refusal()
    tiny_kv = plan_for("smoke", "cpu:64GB", server={"kv_cache_gib": 0.0001})
    assert "server.kv_cache_gib" in tiny_kv.refusal()


def test_an_unknown_model_is_sized_from_params_or_left_unchecked(capsys):
    unknown = ["--set", 'models.judge="org/unknown-judge"', "--machine", "1x80GB",
               "--preset", "gpu-selfimprove"]
    assert main(["plan", *unknown]) == 0
    out = capsys.readouterr().out
    assert "--params org/unknown-judge=7.6" in out and "memory not checked" in out
    assert main(["plan", *unknown, "--params", "org/unknown-judge=7"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("fits")
    assert main(["plan", *unknown, "--params", "org/unknown-judge=7", "--machine", "40GB"]) == 2
    for bad in (["--params", "seven"], ["--machine", "eight GPUs"], ["--gpus", "2"],
                ["--gpus", "2", "--gpu-memory-gib", "80", "--machine", "80GB"]):
        assert main(["plan", *bad]) == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_this_machine_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0, 81920\\n1, 81920\\n2, 40960\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_machine("cuda").gpu_gib == (80.0, 80.0, 40.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,1")
    machine = detect_machine("cuda")
    assert machine.gpu_gib == (40.0, 80.0) and machine.device_ids == ("2", "1")
    assert detect_machine("cpu").gpus == 0


def test_a_server_built_from_the_plan_gets_its_gpu_share_and_sleep_mode(tmp_path):
    (tmp_path / "model").mkdir()
    for machine, sleeps, device in (("1x80GB", True, "0"), ("8x80GB", False, "1")):
        plan = plan_for("gpu-zephyr", machine)
        options = plan.server_options("proposer")
        server = VLLMServer(tmp_path / "model", log_path=tmp_path / "log", backend="cuda",
                            **options)
        cmd, env = server.command(), server.environment()
        share = plan.server("proposer").gpu_memory_utilization
        assert cmd[cmd.index("--gpu-memory-utilization") + 1] == str(share)
        assert env["CUDA_VISIBLE_DEVICES"] == device and not server.sleep_enabled
        policy = VLLMServer(tmp_path / "model", log_path=tmp_path / "log", backend="cuda",
                            **plan.server_options("policy"))
        assert policy.sleep_enabled is sleeps
        assert plan.training_devices() == ("0" if sleeps else "3")


def test_workers_see_the_training_gpus_until_the_run_ends(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    with ExitStack() as stack:
        _train_on("3", stack)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    with ExitStack() as stack:
        _train_on(None, stack)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def small_model(tmp_path):
    """A model directory holding only its config.json: enough for the plan."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
        "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 512}))
    return str(model)


def test_a_run_that_cannot_fit_is_refused_before_anything_starts(tmp_path, capsys):
    model = small_model(tmp_path)
    overrides = ["--set", f'models.policy="{model}"',
                 "--set", "server.kv_cache_gib=0.0001", "--set", "server.max_model_len=65536"]
    code = main(["run", "--preset", "smoke", "--no-tui", "--run-dir", str(tmp_path / "run"),
                 *overrides])
    assert code == 2 and "server.kv_cache_gib" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    config = load_config("smoke", overrides={
        "models": {"policy": model}, "server": {"kv_cache_gib": 0.0001, "max_model_len": 65536}})
    run_dir = prepare_run_dir(config, tmp_path / "started")
    with pytest.raises(UserError, match="does not fit"):
        start_run(run_dir, resume=False)
    assert not (run_dir / "server.log").exists()  # no server was started
