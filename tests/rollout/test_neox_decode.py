"""hybridpo.fast.neox_decode: the lean GPT-NeoX decode step draws what transformers' forward draws.

Both decoders consume the generator in the same order (one draw per running sample per step), so
with the same seed they give the same tokens, and the per-token log-probs agree to float rounding
(1e-5 in fp32). The samples are also checked against a plain padded forward of the finished
responses (teacher forcing), which shares no code with either decoder. Cases cover what the grid
does differently from transformers' batch: prompts of different lengths (left padding in the
shared prompt cache), k > 1 samples reading one prompt cache, samples ending at EOS while others
of the same prompt run on, whole prompts leaving the grid, and the sequential-residual variant.
"""

import pytest
import torch
from torch.testing import assert_close
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from hybridpo.fast import neox_decode
from hybridpo.forward import response_logps
from hybridpo.forward import prompt_pass
from hybridpo.rollout import sample
import replay
from replay import MARGIN, greedy_margin, replaying
from tiny_models import tiny_model

PAD = 1
PROMPTS = [[5, 9, 13, 2, 7, 30, 41], [11, 3], [8, 8, 20, 17, 60], [4]]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def frequent_token(model, prompts) -> int:
    return replay.frequent_token(model, prompts, PAD)


def both(model, prompts, k, monkeypatch, **kwargs):
    return replay.against_transformers("neox", model, prompts, k, monkeypatch, PAD, **kwargs)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5), (0.0, 0)])
def test_same_tokens_and_logps_as_transformers(k, temperature, top_k, monkeypatch):
    model = tiny_model()
    eos = frequent_token(model, PROMPTS)
    a, b = both(model, PROMPTS, k, monkeypatch, max_new_tokens=12, eos_id=eos, temperature=temperature, top_k=top_k)
    assert a.eos.any() and not a.eos.all()  # samples end at different steps, some never
    assert a.responses == b.responses
    assert torch.equal(a.mask, b.mask) and torch.equal(a.eos, b.eos) and torch.equal(a.finished, b.finished)
    assert_close(b.tok_logps, a.tok_logps, atol=1e-5, rtol=0)
    assert_close(b.sampler_logps, a.sampler_logps, atol=1e-5, rtol=0)


def test_ended_prompts_stay_on_the_grid_until_they_are_half_of_it(monkeypatch):
    """Greedy samples of six prompts with an EOS that ends prompt 4 at step 2, prompt 3 at step 4
    and prompt 0 at step 8 (checked below on transformers' own greedy run): the first two stay on
    the grid (fewer than half of it), the third makes them half, and the three leave the grid,
    whose weights are repacked for the three prompts left running to the end. Every sample must
    keep its own cache rows throughout."""
    model = tiny_model()
    prompts = PROMPTS + [[9, 9, 9], [30, 2, 2, 7]]
    eos = 66
    greedy = sample(model, prompts, 1, max_new_tokens=12, eos_id=eos, pad_id=PAD, temperature=0.0, decoder="transformers")
    assert greedy_margin(model, prompts, greedy.responses) > MARGIN  # the same argmax on any CPU
    assert greedy.lengths[:, 0].tolist() == [8, 12, 12, 4, 2, 12] and greedy.eos[:, 0].tolist()[:5] == [True, False, False, True, True]
    a, b = both(model, prompts, 2, monkeypatch, max_new_tokens=12, eos_id=eos, temperature=0.0)
    assert a.responses == b.responses
    assert_close(b.tok_logps, a.tok_logps, atol=1e-5, rtol=0)


def test_unpacked_linears_give_the_same_samples(monkeypatch):
    """Where MKL packing is unavailable (GPU, fp16 / bf16, builds without MKL) every linear is a
    plain addmm; the samples are the same."""
    model = tiny_model()
    eos = frequent_token(model, PROMPTS)
    a, packed = both(model, PROMPTS, 2, monkeypatch, max_new_tokens=10, eos_id=eos)
    monkeypatch.setattr(neox_decode, "_can_pack", lambda weight: False)
    _, b = both(model, PROMPTS, 2, monkeypatch, max_new_tokens=10, eos_id=eos)
    assert a.responses == b.responses == packed.responses
    assert_close(b.tok_logps, a.tok_logps, atol=1e-5, rtol=0)
    assert_close(packed.tok_logps, a.tok_logps, atol=1e-5, rtol=0)


def test_samples_score_the_same_under_a_padded_forward():
    """Teacher forcing the drawn responses through the plain padded layout gives the sampler's log-probs."""
    model = tiny_model(seed=4)
    r = sample(model, PROMPTS, 3, max_new_tokens=9, eos_id=frequent_token(model, PROMPTS), pad_id=PAD,
               generator=gen(5), decoder="neox")
    with torch.no_grad():
        scored = response_logps(model, PROMPTS, r.responses, pad_id=PAD, layout="padded")
    assert_close(scored.by_prompt(), r.logps, atol=1e-5, rtol=0)


def trained_like(model):
    """Random layer-norm γ, β and linear biases: a fresh model has γ = 1, β = 0, biases 0, under
    which folding the norms' affine parts into the next linear (NeoXDecoder) would go untested."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=g))
    return model


@pytest.mark.parametrize("parallel,rotary_pct", [(True, 0.25), (False, 1.0)])
def test_residual_variants_with_trained_norms_and_biases(parallel, rotary_pct, monkeypatch):
    """use_parallel_residual True (Pythia: QKV and the MLP input share one matmul) and False
    (x + attn, then + mlp); rotary over a quarter of each head or the whole of it."""
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.3,
                        use_parallel_residual=parallel, rotary_pct=rotary_pct, attn_implementation="sdpa")
    model = trained_like(GPTNeoXForCausalLM(cfg).eval())
    a, b = both(model, PROMPTS, 2, monkeypatch, max_new_tokens=8, eos_id=-1)
    assert a.responses == b.responses
    assert_close(b.tok_logps, a.tok_logps, atol=1e-5, rtol=0)


def test_rotary_order_pairs_rotate_half_dims():
    """rotate_half pairs dim i with i + R/2; the decoder's order puts each pair side by side."""
    assert neox_decode.rotary_order(8, 4).tolist() == [0, 2, 1, 3, 4, 5, 6, 7]
    assert neox_decode.rotary_order(4, 4).tolist() == [0, 2, 1, 3]


def test_decoding_from_a_prompt_pass(monkeypatch):
    """The shared prompt pass (packed, with grad) seeds the lean decoder as the sampler's own prefill
    does: on the same samples (replayed), the same log-probs."""
    model = tiny_model()
    with torch.enable_grad():
        pp = prompt_pass(model, PROMPTS, pad_id=PAD)
    own = sample(model, PROMPTS, 2, max_new_tokens=8, eos_id=-1, pad_id=PAD, generator=gen(9))
    replaying(monkeypatch, own)
    shared = sample(model, PROMPTS, 2, max_new_tokens=8, eos_id=-1, pad_id=PAD, generator=gen(9), prompt_pass=pp)
    assert shared.responses == own.responses
    assert_close(shared.tok_logps, own.tok_logps, atol=1e-5, rtol=0)


def test_other_models_fall_back_and_forcing_neox_says_why():
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_model(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value"]))
    reason = neox_decode.unsupported_reason(lora.get_base_model())
    assert reason is not None and "Linear" in reason
    r = sample(lora, PROMPTS, 2, max_new_tokens=4, eos_id=-1, pad_id=PAD, generator=gen(1))  # auto: transformers
    assert r.lengths.tolist() == [[4, 4]] * len(PROMPTS)
    with pytest.raises(ValueError, match="decoder='neox' is not available"):
        sample(lora, PROMPTS, 2, max_new_tokens=4, eos_id=-1, pad_id=PAD, decoder="neox")
    with pytest.raises(ValueError, match="decoder='fast'; choose from"):
        sample(tiny_model(), PROMPTS, 2, max_new_tokens=4, eos_id=-1, pad_id=PAD, decoder="fast")


def test_auto_takes_the_lean_decoder_only_in_plain_fp32_on_cpu():
    """The lean decoder's folded fp32 weights were measured on CPU in fp32: under bf16 autocast (a
    `run.mixed_precision: bf16` run) and for a bf16 model, auto decodes with transformers' forward."""
    from hybridpo.fast import decoder_for

    model = tiny_model()
    assert decoder_for(model) == "neox"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decoder_for(model) == "transformers"
    assert decoder_for(tiny_model().to(torch.bfloat16)) == "transformers"
