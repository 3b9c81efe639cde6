"""The real SmolLM2-135M-Instruct, converted from its GGUF file, against the GGUF file loaded by transformers."""

from __future__ import annotations

import json

import pytest
import torch

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gguf_model(smollm2_dir):
    """The same file loaded the way the shared README describes (~10 s: dequantized on load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hybridpo import zoo

    src = zoo.packaged_file("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    return model.eval(), tok


@pytest.fixture(scope="module")
def converted(smollm2_dir):
    from transformers import AutoModelForCausalLM

    from hybridpo.data import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), load_tokenizer(str(smollm2_dir))


def test_folder_is_plain_and_says_what_it_holds(smollm2_dir):
    from hybridpo import zoo

    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", zoo.MARKER} <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model: save_pretrained / from_pretrained as usual
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == ("llama", 30, 576, 49152)
    assert config["tie_word_embeddings"] is True
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 2)
    marker = json.loads((smollm2_dir / zoo.MARKER).read_text())
    src = zoo.packaged_file("smollm2-135m-instruct")
    assert marker["size"] == src.stat().st_size == 98_362_432
    assert "dequantized to float32" in marker["weights"]
    assert marker["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}  # blocks Q4_1, embedding Q8_0, norms fp32
    assert (marker["pad_token"], marker["pad_token_id"], marker["eos_token_id"]) == ("<|im_end|>", 2, 2)
    # 134,515,008 fp32 parameters, the tied head stored once: ~538 MB
    assert 538_000_000 < (smollm2_dir / "model.safetensors").stat().st_size < 538_200_000


def test_tokenizer_keeps_chat_template_and_ids(smollm2_dir, converted, gguf_model):
    _, tok = converted
    _, gguf_tok = gguf_model
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == ("<|im_end|>", 2, 2, 1)  # SmolLM2's own choice: pad = eos
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == gguf_tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert tok.decode(ids).endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    text = "Hello world, déjà vu <|im_end|>"
    assert tok(text)["input_ids"] == gguf_tok(text)["input_ids"]


def test_weights_logits_and_greedy_answer_equal_the_gguf_model(converted, gguf_model):
    model, tok = converted
    reference, _ = gguf_model
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied embeddings stay tied
    theirs = reference.state_dict()
    assert set(model.state_dict()) == set(theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())  # the same fp32 numbers

    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits, expected = model(ids).logits, reference(ids).logits  # (1, 37, 49152)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)  # measured: identical (max |diff| 0.0)
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
        out_ref = reference.generate(ids, max_new_tokens=12, do_sample=False)
    assert out.tolist() == out_ref.tolist()
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == "The capital of France is Paris."


def test_get_reuses_the_converted_folder(smollm2_dir, monkeypatch, capsys):
    from hybridpo import cli
    from hybridpo.zoo import checkpoints as zoo

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(zoo, "_write_plain_folder", no_conversion)
    assert zoo.get("smollm2-135m-instruct", smollm2_dir) == smollm2_dir
    assert cli.main(["model", "get", "smollm2-135m-instruct", "--out", str(smollm2_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2_dir)  # the folder, alone on stdout


def test_random_smollm2_shape_matches_the_real_config(smollm2_dir):
    from transformers import AutoConfig, LlamaForCausalLM

    from hybridpo.data import load_tokenizer
    from hybridpo.zoo import random_config

    real = AutoConfig.from_pretrained(smollm2_dir)
    config = random_config("llama", "smollm2-135m", load_tokenizer(str(smollm2_dir)))
    fields = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
              "vocab_size", "tie_word_embeddings", "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
    assert {f: getattr(config, f) for f in fields} == {f: getattr(real, f) for f in fields}
    assert config.rope_parameters["rope_theta"] == real.rope_parameters["rope_theta"] == 100000.0
    assert config.rms_norm_eps == pytest.approx(real.rms_norm_eps)  # the GGUF stores 1e-5 as float32
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert n == 134_515_008  # 49152 x 576 (tied) + 30 x 3,540,096 + 576
