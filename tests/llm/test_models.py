import json

import pytest

from selfdisco.errors import UserError
from selfdisco.llm.models import BUNDLED, SMOKE, SMOLLM2, resolve_model, sha256_file


def test_manifests_match_the_weights():
    for model in BUNDLED.values():
        manifest = model.manifest()
        assert manifest is not None, f"{model.name} is not prepared"
        assert sha256_file(model.path / "model.safetensors") == manifest["weights_sha256"]


def test_converted_config_is_a_plain_unquantized_llama():
    config = json.loads((BUNDLED[SMOLLM2].path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (BUNDLED[SMOLLM2].path / "chat_template.jinja").exists()


def test_smoke_model_shape_suits_vllm_cpu():
    config = json.loads((BUNDLED[SMOKE].path / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 32
    assert config["num_hidden_layers"] == 2
    assert config["vocab_size"] == 512


def test_resolve_model_names_a_missing_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFDISCO_HOME", str(tmp_path))
    with pytest.raises(UserError, match="setup.sh"):
        resolve_model(SMOLLM2)
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model(hub_id) == hub_id


@pytest.mark.integration
def test_converted_model_answers_a_chat_question_with_transformers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(SMOLLM2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply
