"""hybridpo.fast.panel_linear: the decode step's few-row products with our panel kernel give
residual + x Wᵀ + b (against a float64 product, at every row count the kernel takes), fall back to
the library product where the kernel does not serve, and leave the lean decoders' log-probs where
MKL's product leaves them (the same recorded samples, tests/replay.py, 1e-5 in fp32 on any CPU)."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo import rollout
from hybridpo.fast import decode_gemm_for, panel_linear
from hybridpo.fast.neox_decode import PackedLinear
import replay
from test_varlen_attention import PAD, model_of

WHY = panel_linear.unsupported_reason()
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"panel kernel unavailable here: {WHY}")


def expected(x, weight, bias=None, residual=None):
    """residual + x Wᵀ + b in float64, back to fp32."""
    y = x.double() @ weight.double().t()
    if bias is not None:
        y = y + bias.double()
    if residual is not None:
        y = y + residual.double()
    return y.float()


def close(actual, wanted):
    """fp32 sums over K in another order: relative 1e-5 of the largest output."""
    assert_close(actual, wanted, rtol=1e-5, atol=1e-5 * float(wanted.abs().max()))


@needs_kernel
@pytest.mark.parametrize("shape", [(16, 8), (48, 33), (960, 576), (64, 1536)])
def test_kernel_gives_the_product_at_every_row_count(shape):
    N, K = shape
    g = torch.Generator().manual_seed(N + K)
    weight, bias = torch.randn(N, K, generator=g), torch.randn(N, generator=g)
    for rows in range(1, panel_linear.ROWS + 1):
        x, residual = torch.randn(rows, K, generator=g), torch.randn(rows, N, generator=g)
        linear = panel_linear.PanelLinear(weight, bias, rows)
        assert linear.panels is not None  # the kernel, not the fallback
        close(linear(x), expected(x, weight, bias))
        close(linear(x, residual=residual), expected(x, weight, bias, residual))
        plain = panel_linear.PanelLinear(weight, None, rows)
        close(plain(x, residual=residual), expected(x, weight, None, residual))


@needs_kernel
def test_kernel_refuses_what_it_cannot_take():
    panels = panel_linear.PanelLinear(torch.randn(32, 8), None, 4).panels
    with pytest.raises(RuntimeError, match="1 to 16 rows"):
        torch.ops.hybridpo_panel.linear(torch.randn(17, 8), panels, None, None)
    with pytest.raises(RuntimeError, match="inputs"):
        torch.ops.hybridpo_panel.linear(torch.randn(4, 9), panels, None, None)


@needs_kernel
def test_the_library_product_serves_where_the_kernel_does_not():
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    odd = panel_linear.PanelLinear(weight, bias, 8)  # 40 outputs: not whole panels of 16
    assert odd.panels is None
    x = torch.randn(8, 24, generator=g)
    close(odd(x), expected(x, weight, bias))
    wide = panel_linear.PanelLinear(torch.randn(32, 24, generator=g), None, 32)  # a grid of 32 rows
    assert wide.panels is None
    x32 = torch.randn(32, 24, generator=g)
    close(wide(x32), expected(x32, wide.weight))
    wide.pack(16)  # the grid shrank to 16 rows: the kernel takes over
    assert wide.panels is not None
    x16 = torch.randn(16, 24, generator=g)
    close(wide(x16), expected(x16, wide.weight))
    strided = torch.randn(24, 16, generator=g).t()  # not contiguous: the library product
    close(wide(strided), expected(strided, wide.weight))
    assert isinstance(wide, PackedLinear)
    double = panel_linear.PanelLinear(torch.randn(32, 24, generator=g, dtype=torch.float64), None, 8)
    assert double.panels is None  # not fp32: the library product
    x64 = torch.randn(8, 24, generator=g, dtype=torch.float64)
    assert_close(double(x64), x64 @ double.weight.t())


@needs_kernel
@pytest.mark.parametrize("arch,decoder", [("llama", "llama"), ("qwen2", "llama"), ("gpt-neox", "neox")])
def test_lean_decode_log_probs_as_with_the_library_product(arch, decoder, monkeypatch):
    """The library product's decode draws; the panel kernel's decode replays those tokens: the same
    per-token log-probs (6 prompts x 2 samples = 12 rows, samples ending at EOS on the way)."""
    model = model_of(arch).eval()
    prompts = [[5, 9, 13, 2, 7, 30, 41], [11, 3], [8, 8, 20, 17, 60], [4], [9, 9, 9], [30, 2, 2, 7]]
    eos = replay.frequent_token(model, prompts, PAD)

    def run(gemm):
        return rollout.sample(model, prompts, 2, max_new_tokens=12, eos_id=eos, pad_id=PAD, decoder=decoder,
                              decode_gemm=gemm, generator=torch.Generator().manual_seed(3))

    recorded = run("library")
    assert recorded.eos.any() and not recorded.eos.all()
    with monkeypatch.context() as m:
        replay.replaying(m, recorded)
        library = run("library")
    with monkeypatch.context() as m:
        replay.replaying(m, recorded)
        panels = run("panels")
    assert panels.responses == recorded.responses
    assert_close(panels.tok_logps, library.tok_logps, atol=1e-5, rtol=0)


def test_rule_takes_the_kernel_only_where_measured(monkeypatch):
    tiny = model_of("llama")
    assert decode_gemm_for(tiny) == "library"  # far under 100M parameters
    assert "parameters" in panel_linear.pays_here(tiny)
    assert "Llama-family" in panel_linear.pays_here(model_of("gpt-neox"))  # measured on Llama models only
    monkeypatch.setattr(panel_linear, "_vendor", lambda: "AuthenticAMD")
    assert "Intel" in panel_linear.pays_here(tiny)
    with pytest.raises(ValueError, match="decode_gemm='fast'"):
        decode_gemm_for(tiny, "fast")
    assert decode_gemm_for(tiny, "library") == "library"
    with pytest.raises(ValueError, match="decode_gemm='fast'"):  # refused before any work, on every decode path
        rollout.sample(tiny, [[5, 6]], 1, max_new_tokens=2, eos_id=0, pad_id=PAD, decoder="transformers", decode_gemm="fast")
    if WHY is None:
        assert decode_gemm_for(tiny, "panels") == "panels"
    else:
        with pytest.raises(ValueError, match="not available"):
            decode_gemm_for(tiny, "panels")


def test_a_failed_build_says_why_and_leaves_no_library(tmp_path):
    library = tmp_path / "kernels" / "panel_linear-test.so"
    why = panel_linear._build("false", ["-O3"], library)  # a "compiler" that fails without a word
    assert why == "the kernel did not compile (false): exit status 1"
    assert not library.exists() and not list(library.parent.iterdir())  # no partial file left behind
