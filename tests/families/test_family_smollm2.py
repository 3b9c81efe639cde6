"""The fast paths on the real SmolLM2-135M-Instruct (Llama, 30 layers, width 576, GQA 9 / 3 heads,
tied 49,152-row head): the same equivalences as on the tiny random configs, at short lengths so
the whole file stays near a minute on 2 CPU cores (most of it the 10 s load and the gradients).

Prompts are real chat-templated questions; EOS is the template's <|im_end|>, which the model
emits, so greedy samples stop on their own. pad == EOS, as the model's own config has it.

Tolerance: in fp32 the 30 layers round differently in different layouts: padded-batched vs each
sequence alone (both the plain reference) already differ by 7e-6 in token log-probs, packed vs
padded by up to 4e-5, and up to 6.1e-5 where the products run on oneDNN (hybridpo.fast.onednn_gemm,
what `auto` takes on AMD's Zen 5; its fp32 products land ~1e-6 of their largest output from
float64, MKL's ~4e-7); so fp32 values are checked at FP32_ATOL = 1e-4 and gradients at 5e-4 of
each tensor's norm (measured up to 1.2e-4), and exactness in float64, where every path agrees to 1e-9 (measured 4e-14).
"""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.forward import prompt_pass, response_logps
from hybridpo.rollout import sample
from replay import MARGIN, greedy_margin

QUESTIONS = [
    "What is the capital of France?",  # greedy: "The capital of France is Paris.<|im_end|>" (8 tokens)
    "Reply with one word: yes or no?",  # "Yes.<|im_end|>" (3 tokens)
    "Say hi.",  # runs past NEW tokens
]
NEW = 10
FP32_ATOL = 1e-4  # see the module docstring


@pytest.fixture(scope="module")
def chat(smollm2):
    model, tok = smollm2
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in QUESTIONS]
    prompts = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompts]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    return model, prompts, eos


def short_responses(prompts, eos):
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(100, 40000, (n,), generator=g).tolist()  # noqa: E731
    lens = [(4, 1), (2, 5), (1, 3)]
    return [[ids(n - 1) + [eos] for n in ns] for ns in lens[: len(prompts)]]


def weighted_grads(model, result):
    w = torch.linspace(-1.0, 2.0, len(result.logps))
    model.zero_grad()
    (w * result.logps).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def grad_error(fast, padded) -> float:
    """The largest per-tensor relative error ||g_fast - g_padded|| / ||g_padded||."""
    assert fast.keys() == padded.keys() and fast
    return max(float((fast[n] - padded[n]).norm() / padded[n].norm().clamp(min=1e-30)) for n in padded)


def prompt_sets(prompts):
    """Prompts that share rows (the packed prefill: a full prompt beside two cut to 15 tokens) and
    prompts that do not (37 and 40 tokens: the left-padded prefill)."""
    return {"packed_prefill": [prompts[0], prompts[1][:15], prompts[2][:15]], "left_padded_prefill": prompts[:2]}


@pytest.mark.parametrize("prefill", ["packed_prefill", "left_padded_prefill"])
def test_smollm2_fast_paths_equal_padded_values_and_gradients(chat, prefill, monkeypatch):
    """fp32: values to FP32_ATOL, gradients to 5e-4 of each tensor's norm (fp32 rounding; in float64
    they agree to 1e-9, below). The packed layout on the first set."""
    from hybridpo.forward import layout
    from hybridpo.forward import prompts as prompt_cache

    model, prompts, eos = chat
    prompts = prompt_sets(prompts)[prefill]
    responses = short_responses(prompts, eos)
    branch = []
    monkeypatch.setattr(prompt_cache, "_packed_prefill", lambda *a, f=prompt_cache._packed_prefill: branch.append("packed_prefill") or f(*a))
    monkeypatch.setattr(layout, "left_padded", lambda *a, f=layout.left_padded: branch.append("left_padded_prefill") or f(*a))
    model.train()  # no dropout in SmolLM2's config
    try:
        padded = response_logps(model, prompts, responses, pad_id=eos, layout="padded")
        g_padded = weighted_grads(model, padded)
        paths = {"prompt_pass": dict(prompt_pass=prompt_pass(model, prompts, pad_id=eos, attention="masked")),
                 "prompt_pass_spans": dict(prompt_pass=prompt_pass(model, prompts, pad_id=eos, attention="spans"))}
        if prefill == "packed_prefill":
            paths["packed"] = dict(layout="packed", attention="masked")
            paths["packed_spans"] = dict(layout="packed", attention="spans")
        for name, kwargs in paths.items():
            fast = response_logps(model, prompts, responses, pad_id=eos, **kwargs)
            assert_close(fast.tok_logps, padded.tok_logps, atol=FP32_ATOL, rtol=0, msg=lambda m: f"{name}: {m}")
            error = grad_error(weighted_grads(model, fast), g_padded)
            assert error < 5e-4, f"{name}: {error}"
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    assert branch == [prefill]


def test_smollm2_greedy_equals_generate_and_sampled_logps_equal_scored(chat):
    model, prompts, eos = chat
    with torch.no_grad():
        expected = []
        for p in prompts:
            out = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=eos)
            ids = out[0, len(p):].tolist()
            expected.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
        assert any(e[-1] == eos for e in expected) and any(e[-1] != eos for e in expected)  # EOS stops some
        assert greedy_margin(model, prompts, [[e] for e in expected]) > 10 * MARGIN  # 30 layers round more: a wider gap
        pp = prompt_pass(model, prompts, pad_id=eos)
        for shared in (None, pp):
            greedy = sample(model, prompts, 2, max_new_tokens=NEW, eos_id=eos, pad_id=eos, temperature=0.0, prompt_pass=shared)
            assert greedy.responses == [[e, e] for e in expected]
            drawn = sample(model, prompts, 2, max_new_tokens=NEW, eos_id=eos, pad_id=eos, temperature=0.8,
                           generator=torch.Generator().manual_seed(0), prompt_pass=shared)
            scored = response_logps(model, prompts, drawn.responses, pad_id=eos, temperature=0.8, layout="packed")
            L = scored.tok_logps.shape[-1]
            assert_close(scored.tok_logps, drawn.tok_logps.flatten(0, 1)[:, :L], atol=FP32_ATOL, rtol=0)
            # a sum of up to NEW tokens, each within FP32_ATOL: the lean Llama decode step (auto here)
            # folds the norm scales into its weights and rounds apart from the scorer (5.7e-5 measured)
            assert_close(scored.logps.view(len(prompts), 2), drawn.logps, atol=NEW * FP32_ATOL, rtol=0)


def test_smollm2_fast_paths_are_exact_in_float64(chat, monkeypatch):
    """The real model in float64 (the fp32 casts of the logits and of RMSNorm patched out, as in
    test_family_logprobs): packed and both prompt-pass branches equal padded to 1e-9, values and
    gradients. A copy of the model: 1.1 GB, plus its gradients and one stored set."""
    import copy

    from hybridpo.forward import logprobs

    model, prompts, eos = chat
    monkeypatch.setattr(logprobs, "scaled_logits", lambda logits, t: logits / t)
    model = copy.deepcopy(model).double().train()
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = lambda x, m=module: m.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))
    long_first = prompt_sets(prompts)["packed_prefill"]
    responses = short_responses(long_first, eos)
    padded = response_logps(model, long_first, responses, pad_id=eos, layout="padded")
    g_padded = weighted_grads(model, padded)
    for which in ("packed", "prompt_pass"):
        kwargs = dict(layout="packed") if which == "packed" else dict(prompt_pass=prompt_pass(model, long_first, pad_id=eos))
        fast = response_logps(model, long_first, responses, pad_id=eos, **kwargs)
        assert_close(fast.tok_logps, padded.tok_logps, atol=1e-9, rtol=0)
        for name, g in weighted_grads(model, fast).items():
            assert_close(g, g_padded[name], atol=1e-9, rtol=1e-7, msg=lambda m: f"{which} {name}: {m}")
