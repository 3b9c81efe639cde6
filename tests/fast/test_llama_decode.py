"""hybridpo.fast.llama_decode: the lean Llama-family decode step draws what transformers' forward
draws (same generator order: same tokens; per-token log-probs to 1e-5 in fp32), on Llama (GQA,
untied and tied head), Qwen2 (q / k / v biases) and Mistral without a window; samples end at EOS
while others run on, and prompts leave the grid."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import decoder_for
from hybridpo.rollout import sample

from test_varlen_attention import PAD, model_of

PROMPTS = [[5, 9, 13, 2, 7, 30, 41], [11, 3], [8, 8, 20, 17, 60], [4], [9, 9, 9], [30, 2, 2, 7]]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def frequent_token(model, prompts) -> int:
    r = sample(model, prompts, 4, max_new_tokens=12, eos_id=-1, pad_id=PAD, generator=gen(123), decoder="transformers")
    return int(r.tokens.flatten().mode().values)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5), (0.0, 0)])
@pytest.mark.parametrize("arch", ["llama", "llama_tied", "qwen2", "mistral"])
def test_same_tokens_and_logps_as_transformers(arch, temperature, top_k):
    model = model_of(arch.removesuffix("_tied")).eval()
    if arch == "llama_tied":
        model.config.tie_word_embeddings = True
        model.tie_weights()
    assert decoder_for(model) == "llama"
    eos = frequent_token(model, PROMPTS)
    out = {d: sample(model, PROMPTS, 3, max_new_tokens=12, eos_id=eos, pad_id=PAD, generator=gen(3), decoder=d,
                     temperature=temperature, top_k=top_k) for d in ("transformers", "llama")}
    a, b = out["transformers"], out["llama"]
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
