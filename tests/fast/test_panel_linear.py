"""hybridpo.fast.panel_linear: the decode step's few-row products with our panel kernel (AVX-512 in
two forms, and the AVX2 form, which an AVX-512 CPU runs too) give residual + x Wᵀ + b (against a
float64 product, at every row count the kernel takes), fall back to the library product where the
kernel does not serve, and leave the lean decoders' log-probs where MKL's product leaves them (the
same recorded samples, tests/replay.py, 1e-5 in fp32 on any CPU)."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo import rollout, zoo
from hybridpo.fast import decode_gemm_for, kernels, panel_linear, varlen_attention
from hybridpo.fast.neox_decode import PackedLinear
import replay
from test_varlen_attention import PAD, VOCAB, model_of

WHY = panel_linear.unsupported_reason()  # None where either form loads
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"panel kernel unavailable here: {WHY}")
AVX512_WHY, AVX2_WHY = kernels.load(), kernels.load_avx2()
# the product's forms: AVX-512 in pairs of panels or in one pass, AVX2 (which an AVX-512 CPU runs too)
FORMS = [pytest.param(form, marks=pytest.mark.skipif(why is not None, reason=f"unavailable here: {why}"), id=form)
         for form, why in (("pairs", AVX512_WHY), ("one pass", AVX512_WHY), ("avx2", AVX2_WHY))]


def in_form(linear, form: str):
    """`linear` (a PanelLinear) set to run its products in `form`."""
    linear.avx512, linear.one_pass = form != "avx2", form == "one pass"
    return linear


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


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", [(16, 8), (48, 33), (960, 576), (64, 1536)])  # K across AVX2's blocks of 128 too
def test_kernel_gives_the_product_at_every_row_count(shape, form):
    N, K = shape
    g = torch.Generator().manual_seed(N + K)
    weight, bias = torch.randn(N, K, generator=g), torch.randn(N, generator=g)
    for rows in range(1, panel_linear.ROWS + 1):
        x, residual = torch.randn(rows, K, generator=g), torch.randn(rows, N, generator=g)
        linear = in_form(panel_linear.PanelLinear(weight, bias, rows), form)
        plain = in_form(panel_linear.PanelLinear(weight, None, rows), form)
        assert linear.panels is not None  # the kernel, not the fallback
        close(linear(x), expected(x, weight, bias))
        close(linear(x, residual=residual), expected(x, weight, bias, residual))
        close(plain(x, residual=residual), expected(x, weight, None, residual))


@pytest.mark.parametrize(("vendor", "one_pass"), [("AuthenticAMD", True), ("GenuineIntel", False)])
def test_the_kernels_form_follows_the_measured_vendor(monkeypatch, vendor, one_pass):
    monkeypatch.setattr(kernels, "vendor", lambda: vendor)
    assert panel_linear.one_pass() is one_pass


@pytest.mark.parametrize("form", [f for f in FORMS if f.id != "one pass"])
def test_kernel_refuses_what_it_cannot_take(form):
    panels = panel_linear.PanelLinear(torch.randn(32, 8), None, 4).panels
    ops = torch.ops.hybridpo_panel_avx2 if form == "avx2" else torch.ops.hybridpo_panel
    with pytest.raises(RuntimeError, match="1 to 16 rows"):
        ops.linear(torch.randn(17, 8), panels, None, None)
    with pytest.raises(RuntimeError, match="inputs"):
        ops.linear(torch.randn(4, 9), panels, None, None)


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


@pytest.mark.parametrize("form", [f for f in FORMS if f.id != "one pass"])  # 12 rows: pairs of panels; AVX2
@pytest.mark.parametrize("arch,decoder", [("llama", "llama"), ("qwen2", "llama"), ("gpt-neox", "neox")])
def test_lean_decode_log_probs_as_with_the_library_product(arch, decoder, form, monkeypatch):
    """The library product's decode draws; the panel kernel's decode replays those tokens: the same
    per-token log-probs (6 prompts x 2 samples = 12 rows, samples ending at EOS on the way). In the
    AVX2 form the AVX-512 kernels read as absent, as on a CPU without them."""
    calls = []  # per product: whether it ran the AVX-512 form (None: the library's, as where N is not whole panels)
    original = panel_linear.PanelLinear.__call__
    monkeypatch.setattr(panel_linear.PanelLinear, "__call__", lambda self, x, residual=None: calls.append(
        None if self.panels is None else self.avx512) or original(self, x, residual))
    if form == "avx2":
        monkeypatch.setattr(kernels, "load", lambda: "AVX-512 taken away by the test")
    replayed_with_both(model_of(arch).eval(), decoder, monkeypatch)
    assert (form != "avx2") in calls and set(calls) <= {form != "avx2", None}


def replayed_with_both(model, decoder, monkeypatch):
    """The library product's decode draws; the decode with `library` and with `panels` replays
    those tokens: both give the recorded samples and the same per-token log-probs at 1e-5."""
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


def a_cpu(monkeypatch, vendor: str, family: str, avx512: bool = True, model: str = "49") -> None:
    """Make /proc/cpuinfo read as `vendor`, `family`, `model` for the kernels' rules, and the AVX-512
    kernels as loaded (`avx512`) or not."""
    fields = {"vendor_id": vendor, "cpu family": family, "model": model}
    monkeypatch.setattr(kernels, "vendor", lambda: vendor)
    monkeypatch.setattr(kernels, "_cpuinfo", lambda field: fields.get(field, ""))
    monkeypatch.setattr(kernels, "load", lambda: None if avx512 else "no AVX-512 on this CPU")


@pytest.mark.parametrize(("vendor", "family", "model", "measured"), [
    ("GenuineIntel", "6", "143", True), ("AuthenticAMD", "26", "2", True), ("AuthenticAMD", "26", "255", True),
    ("AuthenticAMD", "25", "17", True), ("AuthenticAMD", "25", "16", True), ("AuthenticAMD", "25", "31", True),
    ("AuthenticAMD", "25", "15", False), ("AuthenticAMD", "25", "32", False), ("AuthenticAMD", "25", "97", False),
    ("AuthenticAMD", "27", "0", False), ("AuthenticAMD", "", "", False), ("HygonGenuine", "24", "0", False), ("", "", "", False)])
def test_auto_takes_our_kernels_on_the_measured_cpus_only(monkeypatch, vendor, family, model, measured):
    """Intel, the Zen 4 EPYCs (family 25, models 0x10-0x1F) and Zen 5 (family 26) were measured;
    Zen 4's other models, later families and other vendors keep the libraries."""
    a_cpu(monkeypatch, vendor, family, model=model)
    why = kernels.measured_cpu()
    assert (why is None) == measured
    assert all((kernels.measured_cpu(k) is None) == measured for k in kernels.KERNELS)  # each measured wherever any was
    if not measured and vendor == "AuthenticAMD":
        assert "Zen 4 (family 25, models 16 to 31)" in why and f"family {family or 'unknown'}" in why
    tiny = model_of("llama", hidden_size=64, num_attention_heads=4)  # heads of 16, on the kernel's grid
    assert varlen_attention.ours_pays_here(tiny) == kernels.measured_cpu("spans")  # the CPU is all that is asked here
    if measured:
        assert "parameters" in panel_linear.pays_here(tiny)  # the next rule: the tiny model's size
    else:
        assert panel_linear.pays_here(tiny) == why
    with pytest.raises(ValueError, match="kernel 'fast'"):
        kernels.measured_cpu("fast")


@pytest.mark.parametrize(("vendor", "family", "model", "measured"), [
    ("AuthenticAMD", "23", "49", True), ("AuthenticAMD", "23", "113", True), ("AuthenticAMD", "23", "1", False),
    ("AuthenticAMD", "25", "1", True), ("AuthenticAMD", "25", "15", True), ("AuthenticAMD", "25", "16", False),
    ("AuthenticAMD", "25", "33", False), ("AuthenticAMD", "26", "2", False), ("GenuineIntel", "6", "85", False)])
def test_without_avx512_auto_takes_the_avx2_product_on_the_measured_cpus_only(monkeypatch, vendor, family, model, measured):
    """Where the AVX-512 kernels do not load, the AVX2 product was measured on AMD's Zen 2 (family
    23, models from 0x30) and Zen 3 EPYCs (family 25, models 0x00-0x0F); Zen 1, other Zen 3 models,
    Zen 4 and Intel without AVX-512 keep MKL's product."""
    a_cpu(monkeypatch, vendor, family, avx512=False, model=model)
    tiny = model_of("llama", hidden_size=64, num_attention_heads=4)
    assert (kernels.measured_avx2_cpu() is None) == measured
    if measured:
        assert "parameters" in panel_linear.pays_here(tiny)  # the next rule: the tiny model's size
    else:
        assert panel_linear.pays_here(tiny) == kernels.measured_avx2_cpu() and "Zen 2" in panel_linear.pays_here(tiny)


def test_rule_takes_the_kernel_only_where_measured(monkeypatch):
    tiny = model_of("llama")
    a_cpu(monkeypatch, "GenuineIntel", "6")
    assert decode_gemm_for(tiny) == "library"  # far under 100M parameters
    assert "parameters" in panel_linear.pays_here(tiny)
    assert "Llama-family" in panel_linear.pays_here(model_of("gpt-neox"))  # measured on Llama models only
    a_cpu(monkeypatch, "AuthenticAMD", "25")
    assert "Zen 5" in panel_linear.pays_here(tiny)
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
    library = tmp_path / "kernels" / "hybridpo_kernels-test.so"
    why = kernels._build("false", ["-O3"], [], library)  # a "compiler" that fails without a word
    assert why == "the kernels did not compile (false): exit status 1"
    assert not library.exists() and not list(library.parent.iterdir())  # no partial file left behind


def test_a_failed_build_names_the_compilers_error_line(tmp_path):
    """The reason quotes the first line that says "error", not the caret line GCC ends with."""
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\necho 'In file included from a.h:1,' >&2\n"
                        "echo \"b.cpp:47:39: error: reference to 'kChunk' is ambiguous\" >&2\necho '   |   ^' >&2\nexit 1\n")
    compiler.chmod(0o755)
    why = kernels._build(str(compiler), ["-O3"], [], tmp_path / "out" / "k.so")
    assert why == f"the kernels did not compile ({compiler}): b.cpp:47:39: error: reference to 'kChunk' is ambiguous"


def rms_normed(x, eps, gamma=None):
    """RMSNorm in float64."""
    x = x.double()
    y = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return y if gamma is None else y * gamma.double()


def fused_ops(form: str):
    """The fused block's calls in `form`: (the library's ops, the trailing arguments they take)."""
    if form == "avx2":
        return torch.ops.hybridpo_panel_avx2, ()
    return torch.ops.hybridpo_panel, (form == "one pass",)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("K,N", [(48, 96), (64, 80)])  # K off the 16-lane grid; 5 panels: an odd one alone
def test_norm_linear_and_norm_glu_against_float64(K, N, form):
    g = torch.Generator().manual_seed(K * N)
    weight, bias, gamma = torch.randn(N, K, generator=g), torch.randn(N, generator=g), 1 + torch.rand(K, generator=g)
    F = 64
    gate_up, gu_bias = torch.randn(2 * F, K, generator=g), torch.randn(2 * F, generator=g)
    ops, extra = fused_ops(form)
    for rows in (1, 3, 8, 9, 16):
        x = 3 * torch.randn(rows, K, generator=g)
        lin = panel_linear.PanelLinear(weight, bias, rows)
        close(ops.norm_linear(x, 1e-5, None, lin.panels, lin.bias, *extra),
              (rms_normed(x, 1e-5) @ weight.double().t() + bias).float())
        close(ops.norm_linear(x, 1e-6, gamma, lin.panels, None, *extra),
              (rms_normed(x, 1e-6, gamma) @ weight.double().t()).float())
        glu = panel_linear.PanelLinear(gate_up, gu_bias, rows)
        both = rms_normed(x, 1e-5) @ gate_up.double().t() + gu_bias.double()
        close(ops.norm_glu(x, 1e-5, glu.panels, glu.bias, *extra),
              (torch.nn.functional.silu(both[:, :F]) * both[:, F:]).float())
    if form != "avx2":  # AVX-512 takes gate and up panels in pairs; AVX2 one at a time
        odd = panel_linear.PanelLinear(torch.randn(96, K, generator=g), None, 4)  # 3 + 3 panels: not pairs
        with pytest.raises(RuntimeError, match="even count"):
            ops.norm_glu(torch.randn(4, K, generator=g), 1e-5, odd.panels, None)


@pytest.mark.parametrize("form", [f for f in FORMS if f.id != "pairs"])  # one e^x per library
def test_the_glus_silu_holds_across_the_range_of_e_to_the_x(form):
    """silu(g) for gates from about -100 to 100 (the gate 60 x the normed input, the up projection
    its bias 1): within fp32's rounding of g (|g| 1e-7 relative, so 3e-5) down to g = -80; under
    that e^-g is clamped at e^88.38 and silu reads as ~0, as it nearly is (|g e^g| < 2e-33)."""
    x = torch.linspace(-1, 1, 16 * 64).view(16, 64)
    weight = torch.cat([60 * torch.eye(64), torch.zeros(64, 64)])  # gate = 60 x̂, up = 0 x̂ + 1
    glu = panel_linear.PanelLinear(weight, torch.cat([torch.zeros(64), torch.ones(64)]), 16)
    ops, extra = fused_ops(form)
    got = ops.norm_glu(x, 1e-5, glu.panels, glu.bias, *extra).double()
    gates = 60 * rms_normed(x, 1e-5)
    assert gates.min() < -95 and gates.max() > 95
    wanted = torch.nn.functional.silu(gates)
    live = gates > -80
    assert_close(got[live], wanted[live], rtol=3e-5, atol=1e-35)
    assert got[~live].abs().max() < 1e-30


def attention_by_hand(qkv, rotation, cache, bias, width, H):
    """What hybridpo_panel.attend computes, in float64 with Python loops over the grid."""
    P, KV, C, D2 = cache.shape
    D, k, R = D2 // 2, bias.shape[2], 2 * rotation.shape[1]
    qkv, cache = qkv.double().clone(), cache.double().clone()
    rows = qkv.view(P, k, H + 2 * KV, D)
    for p in range(P):
        c, s = rotation[p, :, 0].double(), rotation[p, :, 1].double()
        a, b = rows[p, :, : H + KV, 0:R:2].clone(), rows[p, :, : H + KV, 1:R:2].clone()
        rows[p, :, : H + KV, 0:R:2], rows[p, :, : H + KV, 1:R:2] = a * c - b * s, a * s + b * c
        for j in range(k):
            for g in range(KV):
                cache[p, g, width - k + j] = torch.cat([rows[p, j, H + g], rows[p, j, H + KV + g]])
    out = torch.zeros(P, k, H, D, dtype=torch.float64)
    for p in range(P):
        for j in range(k):
            for h in range(H):
                g = h // (H // KV)
                scores = cache[p, g, :width, :D] @ rows[p, j, h] + bias[p, 0, j, :width].double()
                out[p, j, h] = scores.softmax(-1) @ cache[p, g, :width, D:]
    return out.view(P * k, H * D), qkv, cache


@pytest.mark.parametrize("form", [f for f in FORMS if f.id != "one pass"])  # attend has one form per library
@pytest.mark.parametrize("H,KV,D,R", [(4, 2, 32, 16), (3, 3, 16, 16)])  # grouped heads with partial rotary; plain heads
def test_attend_rotates_writes_the_cache_and_attends(H, KV, D, R, form):
    g = torch.Generator().manual_seed(H * D + R)
    P, k, W, T = 3, 2, 5, 6
    C, t = W + k * T, 3
    width = W + k * (t + 1)
    cache = torch.randn(P, KV, C, 2 * D, generator=g)
    allowed = torch.ones(P, k, C, dtype=torch.bool)
    allowed[0, :, :2] = False  # prompt 0's padding
    allowed[:, :, W:] = (torch.arange(C - W) % k == torch.arange(k)[:, None])  # each sample's own columns
    bias = torch.zeros(P, 1, k, C).masked_fill(~allowed[:, None], float("-inf"))
    qkv = torch.randn(P * k, (H + 2 * KV) * D, generator=g)
    angle = torch.rand(P, R // 2, generator=g) * 6
    rotation = torch.stack([angle.cos(), angle.sin()], -1).contiguous()
    wanted, wanted_qkv, wanted_cache = attention_by_hand(qkv, rotation, cache, bias, width, H)
    ops, _ = fused_ops(form)
    out = ops.attend(qkv, rotation, cache, bias, width, H)
    assert_close(out.double(), wanted, atol=1e-5, rtol=1e-5)
    assert_close(qkv.double(), wanted_qkv, atol=1e-6, rtol=1e-6)  # q and k rotated in place
    assert_close(cache.double(), wanted_cache, atol=1e-6, rtol=1e-6)  # the step's k columns written, no other
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ops.attend(torch.randn(2, 40), rotation[:1], torch.randn(1, 1, 4, 16), bias[:1, :, :, :4], 2, 3)


@pytest.mark.parametrize("form", FORMS)  # the decode's 12 rows in pairs of panels; in one pass; AVX2's
@pytest.mark.parametrize("arch,vocab", [("llama", 128), ("qwen2", VOCAB)])  # the head on the kernel; on the library (97)
def test_fused_llama_step_log_probs_as_with_the_library_product(arch, vocab, form, monkeypatch):
    """Head size 16 and MLP width 64: every block of the decode runs the five fused calls
    (PanelLlamaDecoder); its log-probs of the library decode's recorded samples match at 1e-5. In
    the AVX2 form the AVX-512 kernels read as absent, as on a CPU without them."""
    one_pass = form == "one pass"
    monkeypatch.setattr(panel_linear, "one_pass", lambda: one_pass)
    if form == "avx2":
        monkeypatch.setattr(kernels, "load", lambda: "AVX-512 taken away by the test")
    model = zoo.random_model(arch, "tiny", vocab, seed=0, initializer_range=0.3, max_position_embeddings=256,
                             pad_token_id=PAD, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=64).eval()
    fused = []  # whether each PanelLlamaDecoder layout (at the start, and after any repack) fuses its blocks
    original = panel_linear.PanelLlamaDecoder._all_on_kernel
    monkeypatch.setattr(panel_linear.PanelLlamaDecoder, "_all_on_kernel", lambda self: fused.append(original(self)) or fused[-1])
    replayed_with_both(model, "llama", monkeypatch)
    assert fused and all(fused)
    decoder = panel_linear.PanelLlamaDecoder(model, rows=12)
    assert decoder.one_pass is one_pass and decoder.avx512 is (form != "avx2")
    decoder.repack(32)  # a grid of more than 16 rows: the library's products, LlamaDecoder's step
    assert fused[-1] is False
    decoder.repack(8)  # half the prompts left the grid: the kernel and the fused step again
    assert fused[-1] is True
