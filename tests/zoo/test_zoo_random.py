"""Random models of every family: the config fields each family promises, a forward pass, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hybridpo.zoo import ARCHS, random_config, random_model

PYTHIA_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"
VOCAB = 96
IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])  # (B=2, T=6)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_tiny_model_of_each_family_runs_forward(arch):
    model = random_model(arch, "tiny", VOCAB, eos_token_id=0, pad_token_id=1).eval()
    with torch.no_grad():
        logits = model(IDS, attention_mask=torch.ones_like(IDS)).logits
    assert logits.shape == (2, 6, VOCAB) and torch.isfinite(logits).all()
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size) == (2, 64, 4, 256, VOCAB)
    if arch != "gpt-neox":  # grouped-query attention: 4 query heads share 2 key / value heads
        assert c.num_key_value_heads == 2
        attn = model.model.layers[0].self_attn
        assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (64, 32, 32)


@pytest.mark.parametrize("arch, tied", [("gpt-neox", False), ("llama", True), ("qwen2", True), ("mistral", False)])
def test_heads_tied_by_default_as_each_family_ships_and_flippable(arch, tied):
    for tie in (tied, not tied):
        model = random_model(arch, "tiny", VOCAB, tie_word_embeddings=tie) if tie != tied else random_model(arch, "tiny", VOCAB)
        assert model.config.tie_word_embeddings is tie
        assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) is tie


def test_qwen2_has_qkv_biases_and_llama_none():
    qwen = random_model("qwen2", "tiny", VOCAB).model.layers[0].self_attn
    assert all(getattr(qwen, p).bias is not None for p in ("q_proj", "k_proj", "v_proj")) and qwen.o_proj.bias is None
    llama = random_model("llama", "tiny", VOCAB).model.layers[0].self_attn
    assert all(getattr(llama, p).bias is None for p in ("q_proj", "k_proj", "v_proj", "o_proj"))


def test_mistral_sliding_window_never_cuts():
    config = random_config("mistral", "tiny", VOCAB)
    assert config.sliding_window == 4096 > config.max_position_embeddings == 2048  # Mistral-7B-v0.1's window
    windowed = random_model("mistral", "tiny", VOCAB, seed=1).eval()
    plain = random_model("mistral", "tiny", VOCAB, seed=1, sliding_window=None).eval()  # v0.3: no window
    ids = torch.randint(2, VOCAB, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(windowed(ids).logits, plain(ids).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_same_seed_same_weights(arch):
    assert same_weights(random_model(arch, "tiny", VOCAB, seed=3), random_model(arch, "tiny", VOCAB, seed=3))
    assert not same_weights(random_model(arch, "tiny", VOCAB, seed=3), random_model(arch, "tiny", VOCAB, seed=4))


def test_gpt_neox_weights_are_the_old_builders(tok):
    """Same seed -> the same weights as the GPT-NeoX builder that preceded zoo (its config, verbatim),
    so tests and benchmarks keep their numbers."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    for size, (layers, hidden, heads, intermediate) in {"tiny": (2, 64, 4, 256), "small": (4, 128, 4, 512)}.items():
        old = GPTNeoXConfig(
            vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1,
        )
        torch.manual_seed(7)
        expected = GPTNeoXForCausalLM(old)
        model = random_model("gpt-neox", size, tok, seed=7)
        assert same_weights(model, expected)
        assert {k: v for k, v in model.config.to_dict().items() if k != "dtype"} == \
               {k: v for k, v in expected.config.to_dict().items() if k != "dtype"}


def test_vocabulary_from_tokenizer_or_size(tok):
    assert random_config("llama", "tiny", tok).vocab_size == 50304  # 50,277 rounded up to 128s
    assert random_config("llama", "tiny", 1000).vocab_size == 1000  # an int is taken as is
    with pytest.raises(ValueError, match="smaller than the tokenizer's 50277 tokens"):
        random_config("llama", "smollm2-135m", tok)  # SmolLM2's 49,152 rows cannot hold Pythia's ids
    assert random_config("llama", "smollm2-135m", tok, vocab_size=50304).num_hidden_layers == 30
    with pytest.raises(ValueError, match="choose from"):
        random_config("gpt2", "tiny", tok)
    with pytest.raises(ValueError, match="for arch='qwen2'; choose from"):
        random_config("qwen2", "pythia-70m", tok)


def test_init_model_command_llama(tmp_path):
    from transformers import AutoModelForCausalLM

    from hybridpo import cli
    from hybridpo.data import load_tokenizer

    out = tmp_path / "llama"
    assert cli.main(["init-model", "--arch", "llama", "--size", "tiny", "--tokenizer", str(PYTHIA_TOKENIZER),
                     "--out", str(out), "--seed", "2"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = load_tokenizer(str(out))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1) == (model.config.eos_token_id, model.config.pad_token_id)
    assert same_weights(model, random_model("llama", "tiny", tok, seed=2))
