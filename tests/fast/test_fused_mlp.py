"""The SwiGLU MLP keeping two tensors for its backward (hybridpo.fast.fused_mlp): the module's own
values and gradients; through response_logps, the padded reference's (1e-5, fp32)."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import fused_mlp, mlp_for
from hybridpo.forward import prompt_pass, response_logps

from test_varlen_attention import PAD, assert_same, batch, grads, model_of


@pytest.mark.parametrize("bias", [False, True])
def test_the_fused_mlp_gives_the_modules_values_and_gradients(bias):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=24, num_attention_heads=2, mlp_bias=bias))
    x = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(2, 5, 8)
    want = mlp(x)
    g_want = torch.autograd.grad((w * want).sum(), [x, *mlp.parameters()])
    with fused_mlp.fused_mlps(mlp):
        got = mlp(x)
        assert got.grad_fn is not None and "SwiGLUDown" in type(got.grad_fn).__name__
    g_got = torch.autograd.grad((w * got).sum(), [x, *mlp.parameters()])
    assert torch.equal(got, want)  # the same operations forward
    for a, b in zip(g_got, g_want):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert "forward" not in mlp.__dict__  # swapped back


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fused_mlp_through_response_logps_and_the_prompt_pass_equals_padded(arch):
    model = model_of(arch)
    assert mlp_for(model) == "fused"
    prompts, responses = batch("mixed")
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    g_padded = grads(model, padded)
    fast = response_logps(model, prompts, responses, pad_id=PAD, mlp="fused")
    assert_same(fast, padded, grads(model, fast), g_padded)
    pp = prompt_pass(model, prompts, pad_id=PAD, mlp="fused")
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, mlp="fused")
    assert_same(shared, padded, grads(model, shared), g_padded)


def test_models_without_a_swiglu_mlp_stay_plain():
    neox = model_of("gpt-neox")
    assert mlp_for(neox) == "plain"
    with pytest.raises(ValueError, match="SwiGLU"):
        mlp_for(neox, "fused")
