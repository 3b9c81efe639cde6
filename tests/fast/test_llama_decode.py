"""hybridpo.fast.llama_decode: the lean Llama-family decode step gives what transformers' forward
gives on the same samples (tests/replay.py: both decoders draw one recording, so the per-token
log-probs compare at 1e-5 in fp32 on any CPU), on Llama (GQA, untied and tied head), Qwen2
(q / k / v biases) and Mistral without a window; samples end at EOS while others run on, and
prompts leave the grid."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import decoder_for
import replay
from test_varlen_attention import PAD, model_of

PROMPTS = [[5, 9, 13, 2, 7, 30, 41], [11, 3], [8, 8, 20, 17, 60], [4], [9, 9, 9], [30, 2, 2, 7]]


def frequent_token(model, prompts) -> int:
    return replay.frequent_token(model, prompts, PAD)


def both(model, prompts, k, monkeypatch, **kwargs):
    return replay.against_transformers("llama", model, prompts, k, monkeypatch, PAD, **kwargs)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5), (0.0, 0)])
@pytest.mark.parametrize("arch", ["llama", "llama_tied", "qwen2", "mistral"])
def test_same_tokens_and_logps_as_transformers(arch, temperature, top_k, monkeypatch):
    model = model_of(arch.removesuffix("_tied")).eval()
    if arch == "llama_tied":
        model.config.tie_word_embeddings = True
        model.tie_weights()
    assert decoder_for(model) == "llama"
    eos = frequent_token(model, PROMPTS)
    a, b = both(model, PROMPTS, 3, monkeypatch, max_new_tokens=12, eos_id=eos, temperature=temperature, top_k=top_k)
    assert a.eos.any() and not a.eos.all()  # samples end at different steps, some never
    assert a.responses == b.responses
    assert torch.equal(a.mask, b.mask) and torch.equal(a.finished, b.finished)
    assert_close(b.tok_logps, a.tok_logps, atol=1e-5, rtol=0)
    assert_close(b.sampler_logps, a.sampler_logps, atol=1e-5, rtol=1e-6)  # sums of up to 12 tokens


def test_other_models_and_forcing_say_why():
    neox = model_of("gpt-neox")
    assert decoder_for(neox) in ("neox", "transformers")
    with pytest.raises(ValueError, match="not a Llama-family"):
        decoder_for(neox, "llama")
    windowed = model_of("mistral")
    windowed.config.sliding_window = 4096
    with pytest.raises(ValueError, match="sliding"):
        decoder_for(windowed, "llama")
    assert decoder_for(windowed) == "transformers"


def test_lean_names_the_familys_step_and_auto_takes_it_only_in_plain_fp32_on_cpu():
    """'lean' is the family's step; auto takes it only where it was measured, fp32 weights on CPU
    outside autocast (under bf16 autocast the folded fp32 weights would meet bf16 activations)."""
    llama, neox = model_of("llama"), model_of("gpt-neox")
    assert decoder_for(llama, "lean") == "llama" and decoder_for(neox, "lean") == "neox"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decoder_for(llama) == "transformers"
        assert decoder_for(llama, "lean") == "llama"  # asked for by name: taken
    assert decoder_for(model_of("llama").to(torch.bfloat16)) == "transformers"
