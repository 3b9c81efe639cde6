"""hybridpo.fast.onednn_gemm: the four products on oneDNN give x Wᵀ + b, a b, aᵀ b and acc + aᵀ b
(against float64, on contiguous and strided operands), fall back to torch where oneDNN does not serve, and
through Llama, Qwen2, Mistral and GPT-NeoX models leave the log-probs and every parameter's
gradient where the padded reference puts them (1e-5, fp32); `auto` takes oneDNN only on the CPUs
it was measured on."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import kernels, onednn_gemm as og, train_gemm_for
from hybridpo.forward import prompt_pass, response_logps
from ragged import batch, grads
from test_panel_linear import a_cpu
from test_varlen_attention import PAD, VOCAB, assert_same, model_of

HERE = pathlib.Path(__file__).parent
WHY = og.unsupported_reason()
needs_onednn = pytest.mark.skipif(WHY is not None, reason=f"oneDNN unavailable here: {WHY}")


def close(actual, wanted):
    """fp32 sums over K in another order: relative 1e-5 of the largest output."""
    assert actual.shape == wanted.shape
    assert_close(actual, wanted.float(), rtol=1e-5, atol=1e-5 * float(wanted.abs().max()))


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 16, 24), (300, 64, 192), (1024, 576, 1536)])
def test_products_equal_float64(shape):
    M, K, N = shape
    g = torch.Generator().manual_seed(M + K + N)
    x, w, b, dy = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(N, generator=g), torch.randn(M, N, generator=g)
    close(og.linear(x, w, b, onednn=True), x.double() @ w.double().t() + b.double())
    close(og.linear(x.view(1, M, K), w, onednn=True), (x.double() @ w.double().t()).view(1, M, N))  # (..., K) rows
    close(og.mm(dy, w, onednn=True), dy.double() @ w.double())
    close(og.mm(dy.t().contiguous().t(), w, onednn=True), dy.double() @ w.double())  # a strided operand
    d_w = og.mm_tn(dy, x, onednn=True)
    assert d_w.is_contiguous()
    close(d_w, dy.double().t() @ x.double())
    acc = torch.randn(N, K, generator=g)
    wanted = acc.double() + dy.double().t() @ x.double()
    assert og.add_mm_tn(acc, dy, x.t().contiguous().t(), onednn=True) is acc  # in place, b strided
    close(acc, wanted)


def test_off_the_scope_or_off_fp32_the_products_are_torchs():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(3, 8, generator=g, dtype=torch.float64)
    assert not og.on()
    assert torch.equal(og.linear(x.float(), w.float()), torch.nn.functional.linear(x.float(), w.float()))  # off the scope
    assert torch.equal(og.linear(x, w, onednn=True), torch.nn.functional.linear(x, w))  # float64: torch's, even when asked
    assert torch.equal(og.mm(x, w.t(), onednn=True), x @ w.t())
    assert torch.equal(og.mm_tn(x, x, onednn=True), x.t() @ x)
    acc = torch.ones(8, 8, dtype=torch.float64)
    assert torch.equal(og.add_mm_tn(acc.clone(), x, x, onednn=True), torch.ones(8, 8, dtype=torch.float64).addmm_(x.t(), x))


@needs_onednn
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt-neox"])
def test_through_a_model_onednn_equals_padded(arch, monkeypatch):
    model = model_of(arch, hidden_size=64, num_attention_heads=4, intermediate_size=96)
    prompts, responses = batch("mixed", VOCAB)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    g_padded = grads(model, padded)
    calls, head_dw = [], []
    real, real_add = og._Linear.backward, og.add_mm_tn
    monkeypatch.setattr(og._Linear, "backward", staticmethod(lambda ctx, grad: calls.append(1) or real(ctx, grad)))
    monkeypatch.setattr(og, "add_mm_tn", lambda acc, a, b, onednn=None: head_dw.append(onednn) or real_add(acc, a, b, onednn))
    packed = response_logps(model, prompts, responses, pad_id=PAD, temperature=0.7, train_gemm="onednn")
    assert_same(packed, padded, grads(model, packed), g_padded)
    assert calls  # the backward, after the scope, ran the projections' products on oneDNN
    assert head_dw and all(head_dw)  # and the fused head's dW, block by block
    pp = prompt_pass(model, prompts, pad_id=PAD, train_gemm="onednn")
    after = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7, train_gemm="onednn")
    assert_same(after, padded, grads(model, after), g_padded)
    assert not any("forward" in m.__dict__ for m in model.modules())  # every swap undone


@pytest.mark.parametrize(("vendor", "family", "model", "measured"), [
    ("AuthenticAMD", "26", "2", True), ("AuthenticAMD", "25", "17", True), ("AuthenticAMD", "25", "1", False),
    ("AuthenticAMD", "25", "97", False), ("AuthenticAMD", "27", "0", False), ("GenuineIntel", "6", "143", False), ("", "", "", False)])
def test_auto_takes_onednn_on_the_measured_amd_cpus_only(monkeypatch, vendor, family, model, measured):
    """oneDNN's products were measured to pay on the Zen 4 EPYCs (family 25, models 0x10-0x1F) and
    Zen 5 (family 26); on Zen 3 and on Intel MKL's were as fast or faster."""
    a_cpu(monkeypatch, vendor, family, model=model)
    model = model_of("llama")
    assert (og.pays_here(model) is None) == measured
    assert train_gemm_for(model) == ("onednn" if measured and WHY is None else "library")
    assert train_gemm_for(model, "library") == "library"
    with pytest.raises(ValueError, match="train_gemm='fast'"):
        train_gemm_for(model, "fast")
    assert kernels.vendor() == vendor


@needs_onednn
def test_a_hooked_linear_still_runs_its_hooks():
    model = model_of("llama", hidden_size=64, num_attention_heads=4)
    seen = []
    model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    prompts, responses = batch("pairs", VOCAB)
    response_logps(model, prompts, responses, pad_id=PAD, train_gemm="onednn")
    assert len(seen) == 1


_NEW_SHAPE_EVERY_STEP = """
import torch
from test_varlen_attention import model_of
from hybridpo.bench.record import current_rss as rss
from hybridpo.fast import onednn_gemm
from hybridpo.forward import response_logps
torch.set_num_threads(1)
onednn_gemm.mm(torch.ones(3, 4), torch.ones(4, 5), onednn=True)  # a first primitive before any `gemms`, as the bench's peak
model = model_of("llama", hidden_size=128, num_attention_heads=4, intermediate_size=256)
for step in range(180):
    n = 40 + step  # a packed row count not seen before, as nearly every training step has
    out = response_logps(model, [[1] * n], [[[2] * 5]], pad_id=0, train_gemm="onednn")
    out.logps.sum().backward()
    model.zero_grad(set_to_none=True)
    if step == 20:
        start = rss()
print(rss() - start)
"""


@needs_onednn
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads resident memory from /proc")
def test_resident_memory_stays_bounded_when_every_step_has_a_new_shape():
    """oneDNN keeps a primitive per product shape (1,024 of them unless capped): uncapped, this
    loop's resident memory grew ~3.5 MB a step (644 MB over its 160 measured steps, one AMD EPYC);
    with the caps hybridpo.fast.onednn_gemm sets at import, 7 MB in all."""
    env = {k: v for k, v in os.environ.items() if k not in og._CACHE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", _NEW_SHAPE_EVERY_STEP], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = int(run.stdout.split()[-1])
    assert growth < 100 << 20, f"resident memory grew {growth / 2**20:.0f} MB over 160 steps of new shapes"


def test_the_cache_caps_leave_the_environments_own(monkeypatch):
    monkeypatch.setenv(og._CACHE_VARIABLES[0], "7")
    monkeypatch.delenv(og._CACHE_VARIABLES[1], raising=False)
    og.bound_primitive_cache()
    assert os.environ[og._CACHE_VARIABLES[0]] == "7"
    assert os.environ[og._CACHE_VARIABLES[1]] == str(og.PRIMITIVE_CACHE)
