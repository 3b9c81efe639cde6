"""A block's elementwise chains compiled (hybridpo.fast.compiled_elementwise): each chain against
the transformers module it stands in for (fp32, 1e-5), its backward against finite differences
(float64 gradcheck), and through response_logps / the prompt pass against the padded reference."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import block_scope, compiled_elementwise as ce, elementwise_for, fused_mlp
from hybridpo.forward import prompt_pass, response_logps

from test_varlen_attention import PAD, assert_same, batch, grads, model_of

pytestmark = pytest.mark.skipif(ce.compiler_missing() is not None, reason=str(ce.compiler_missing()))


def _norm(width=8, seed=0):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(seed)
    norm = LlamaRMSNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(width))
    return norm


def test_the_compiled_rmsnorm_gives_the_modules_values_and_gradients():
    norm = _norm()
    x = (3 * torch.randn(2, 7, 8)).requires_grad_()
    w = torch.randn(2, 7, 8)
    want = norm(x)
    g_want = torch.autograd.grad((w * want).sum(), [x, norm.weight])
    with ce.compiled_blocks(_wrap(norm)):
        got = norm(x)
        assert "RMSNorm" in type(got.grad_fn).__name__  # the compiled function, not the module's ops
    g_got = torch.autograd.grad((w * got).sum(), [x, norm.weight])
    assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_got, g_want):
        assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert "forward" not in norm.__dict__  # swapped back


def test_the_compiled_rotary_gives_transformers_values_and_gradients():
    from transformers.models.llama import modeling_llama

    torch.manual_seed(0)
    T, D = 6, 8
    q = torch.randn(1, T, 4, D).transpose(1, 2).detach().requires_grad_()  # (1, H, T, D) views, as the layer makes
    k = torch.randn(1, T, 2, D).transpose(1, 2).detach().requires_grad_()
    angle = torch.arange(T)[:, None] * torch.rand(D // 2)
    cos, sin = torch.cat([angle.cos()] * 2, -1)[None], torch.cat([angle.sin()] * 2, -1)[None]
    gq, gk = torch.randn(1, 4, T, D), torch.randn(1, 2, T, D)
    want = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    g_want = torch.autograd.grad([want[0], want[1]], [q, k], [gq, gk])
    got = ce.apply_rotary_pos_emb(q, k, cos, sin)
    assert "Rotary" in type(got[0].grad_fn).__name__
    g_got = torch.autograd.grad([got[0], got[1]], [q, k], [gq, gk])
    for a, b in zip((*got, *g_got), (*want, *g_want)):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        for a, b in zip(ce.apply_rotary_pos_emb(q, k, cos, sin), want):
            assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_compiled_backwards_equal_finite_differences():
    """float64: each autograd function's backward against torch.autograd.gradcheck's numerical Jacobian."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = (1 + 0.5 * torch.randn(5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ce._RMSNorm.apply(a, b, 1e-5), (x, weight))
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    angle = torch.rand(3, 2, dtype=torch.float64) * 3
    cos, sin = torch.cat([angle.cos()] * 2, -1)[None, None], torch.cat([angle.sin()] * 2, -1)[None, None]
    assert torch.autograd.gradcheck(lambda a, b: ce._Rotary.apply(a, b, cos, sin), (q, k))


def test_the_compiled_swiglu_backward_gives_the_modules_gradients():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=24, num_attention_heads=2))
    x = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(2, 5, 8)
    want = mlp(x)
    g_want = torch.autograd.grad((w * want).sum(), [x, *mlp.parameters()])
    calls = []
    chain = ce.swiglu_backward()
    with pytest.MonkeyPatch.context() as patch, fused_mlp.fused_mlps(mlp, compiled=True):
        patch.setattr(ce, "swiglu_backward", lambda: lambda *a: calls.append(1) or chain(*a))
        got = mlp(x)
        g_got = torch.autograd.grad((w * got).sum(), [x, *mlp.parameters()])
    assert calls == [1]
    assert torch.equal(got, want)  # the forward is the module's own operations
    for a, b in zip(g_got, g_want):
        assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_compiled_chains_through_response_logps_and_the_prompt_pass_equal_padded(arch, monkeypatch):
    model = model_of(arch)
    prompts, responses = batch("mixed")
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    g_padded = grads(model, padded)
    calls = {"norm": 0, "rotary": 0}
    norm, rotary = ce.rms_forward(), ce.rotary_forward()
    monkeypatch.setattr(ce, "rms_forward", lambda: lambda *a: calls.__setitem__("norm", calls["norm"] + 1) or norm(*a))
    monkeypatch.setattr(ce, "rotary_forward", lambda: lambda *a: calls.__setitem__("rotary", calls["rotary"] + 1) or rotary(*a))
    fast = response_logps(model, prompts, responses, pad_id=PAD, elementwise="compiled")
    layers = model.config.num_hidden_layers
    assert calls == {"norm": 2 * layers + 1, "rotary": layers}  # every norm (the final one too), every layer's rotary
    assert_same(fast, padded, grads(model, fast), g_padded)
    pp = prompt_pass(model, prompts, pad_id=PAD, elementwise="compiled")
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, elementwise="compiled")
    assert_same(shared, padded, grads(model, shared), g_padded)
    with torch.no_grad():  # the reference's forward: no autograd functions, the same numbers
        assert_close(response_logps(model, prompts, responses, pad_id=PAD, elementwise="compiled").tok_logps,
                     padded.tok_logps.detach(), atol=1e-5, rtol=0)
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen2 import modeling_qwen2

    assert modeling_llama.apply_rotary_pos_emb is not ce.apply_rotary_pos_emb  # put back
    assert modeling_qwen2.apply_rotary_pos_emb is not ce.apply_rotary_pos_emb
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_auto_compiles_only_wide_llama_family_models():
    tiny = model_of("llama")  # f = 64: compiling would cost more than it saves
    assert elementwise_for(tiny) == "eager"
    assert elementwise_for(tiny, "compiled") == "compiled"
    assert elementwise_for(tiny, "eager") == "eager"
    tiny.config.intermediate_size = 1536  # the rule reads the width from the config (SmolLM2-135M's)
    assert elementwise_for(tiny) == "compiled"
    neox = model_of("gpt-neox")
    assert elementwise_for(neox) == "eager"
    with pytest.raises(ValueError, match="Llama-family"):
        elementwise_for(neox, "compiled")
    with pytest.raises(ValueError, match="choose from"):
        elementwise_for(tiny, "fast")
    with block_scope(neox, elementwise="auto", train_gemm="library"):  # nothing swapped on a model it does not serve
        assert not any("forward" in m.__dict__ for m in neox.modules())


class _wrap(torch.nn.Module):
    """A module with a Llama config around a bare norm, for compiled_blocks' model lookup."""

    def __init__(self, inner):
        super().__init__()
        from transformers import LlamaConfig

        self.inner, self.config = inner, LlamaConfig()
