"""The reward-model head and both cheap references on every architecture family.

- `rewards.reward_scores` on AutoModelForSequenceClassification equals the head applied by hand
  at the last real token of each unpadded prompt + response (and the model's own forward on that
  sequence alone), with pad == EOS (responses end in EOS, so the pad id occurs inside the real
  tokens) and pad != EOS.
- LoRA: π_ref = the policy with its adapter disabled, through the packed layout, equals a frozen
  deep copy of the model taken before LoRA (padded); the policy itself (adapter on, B != 0) packed
  equals padded, values and LoRA gradients.
- last N layers: `FrozenTrunkReference` (via build_reference) through the packed layout equals a
  frozen deep copy after the policy's trained blocks have moved, both when it reuses the trunk of
  the policy's own forward and when it runs the trunk itself.
"""

import copy

import pytest
import torch
from torch.testing import assert_close

from family_models import EOS, FAMILIES, PAD, SHARED, VOCAB, family_model
from hybridpo.config import LoraConfig, ModelConfig
from hybridpo.forward import response_logps
from hybridpo.models import apply_lora, build_reference, train_last_n_layers
from hybridpo.forward import prompt_pass
from hybridpo.forward import reward_scores


def batch(seed=3, eos=True):
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(2, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    end = [EOS] if eos else []
    prompts = [ids(n) for n in (5, 1, 9, 4)]
    responses = [[ids(n) + end for n in ns] for ns in ((3, 7), (0,), (4, 1, 6), (1, 10))]
    return prompts, responses


@pytest.mark.parametrize("pad", [EOS, PAD], ids=["pad_is_eos", "pad_is_not_eos"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reward_scores_read_the_last_real_token(family, pad):
    model = family_model(family, head="reward")
    prompts, responses = batch()
    scores = reward_scores(model, prompts, responses, pad_id=pad)
    seqs = [p + r for p, rs in zip(prompts, responses) for r in rs]
    backbone = getattr(model, model.base_model_prefix)
    with torch.no_grad():
        by_hand = torch.stack([model.score(backbone(input_ids=torch.tensor([s])).last_hidden_state[0, -1])[0] for s in seqs])
        own = torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs])  # one sequence, no padding
    assert scores.shape == (len(seqs),) and scores.dtype == torch.float32
    assert_close(scores, by_hand, atol=1e-5, rtol=0)
    assert_close(scores, own, atol=1e-5, rtol=0)
    assert scores.std() > 0.01  # the scores differ, so a wrong position would show


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_reward_scores_equal_padded_values_and_gradients(family):
    """The packed layout (each prompt once, its responses after it) scores what the padded rows
    score, and trains the same: gradients of a weighted sum of the scores agree."""
    model = family_model(family, head="reward").train()
    prompts, responses = batch()
    w = torch.linspace(-1.0, 2.0, sum(len(rs) for rs in responses))

    def scores_and_grads(layout):
        model.zero_grad(set_to_none=True)
        scores = reward_scores(model, prompts, responses, pad_id=PAD, layout=layout)
        (w * scores).sum().backward()
        return scores.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    packed, g_packed = scores_and_grads("packed")
    padded, g_padded = scores_and_grads("padded")
    assert_close(packed, padded, atol=1e-5, rtol=0)
    assert len(g_packed) == len(g_padded) > 0
    for a, b in zip(g_packed, g_padded):
        assert_close(a, b, atol=1e-5 * max(1.0, b.abs().max().item()), rtol=0)


def moved_lora(family):
    model = family_model(family).train()
    before = copy.deepcopy(model).eval()
    cfg = ModelConfig(finetune="lora", lora=LoraConfig(r=4))  # peft's default target modules per architecture
    policy = apply_lora(model, cfg, task_type="CAUSAL_LM")
    with torch.no_grad():  # B = 0 at init would make the adapter a no-op
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return policy, build_reference(policy, cfg), before


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_disabled_adapter_reference_equals_the_model_before_lora(family):
    policy, ref, before = moved_lora(family)
    assert ref.kind == "disabled_adapter"
    prompts, responses = batch()
    expected = response_logps(before, prompts, responses, pad_id=PAD, layout="padded")
    with torch.no_grad(), ref.scope():
        ref_logps = response_logps(ref.model, prompts, responses, pad_id=PAD, layout="packed")
    assert_close(ref_logps.tok_logps, expected.tok_logps, atol=1e-5, rtol=0)
    with torch.no_grad():
        moved = response_logps(policy, prompts, responses, pad_id=PAD, layout="packed")
    assert (moved.logps - expected.logps).abs().max() > 0.1  # the adapter is on outside the scope


@pytest.mark.parametrize("family", SHARED)
def test_lora_policy_packed_and_prompt_pass_equal_padded_with_gradients(family):
    policy, _, _ = moved_lora(family)
    prompts, responses = batch()
    w = torch.linspace(-1.0, 2.0, sum(len(rs) for rs in responses))

    def run(**kwargs):
        policy.zero_grad()
        out = response_logps(policy, prompts, responses, pad_id=PAD, **kwargs)
        (w * out.logps).sum().backward()
        return out.tok_logps.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}

    padded, g_padded = run(layout="padded")
    assert g_padded and all("lora_" in n for n in g_padded)
    for fast, g_fast in (run(layout="packed"), run(prompt_pass=prompt_pass(policy, prompts, pad_id=PAD))):
        assert_close(fast, padded, atol=1e-5, rtol=0)
        for name in g_padded:
            scale = max(1.0, g_padded[name].abs().max().item())
            assert_close(g_fast[name], g_padded[name], atol=1e-5 * scale, rtol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_trunk_reference_equals_a_frozen_copy(family):
    policy = family_model(family).train()
    before = copy.deepcopy(policy).eval()
    cfg = ModelConfig(finetune="last_n_layers", last_n_layers=1)
    train_last_n_layers(policy, 1)
    ref = build_reference(policy, cfg)
    assert ref.kind == "frozen_trunk"
    with torch.no_grad():  # training moves the last block (and the final norm; the head if untied)
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    prompts, responses = batch()
    expected = response_logps(before, prompts, responses, pad_id=PAD, layout="padded")
    moved = response_logps(policy, prompts, responses, pad_id=PAD, layout="packed")  # the policy's forward
    assert (moved.logps - expected.logps).abs().max() > 0.1
    with torch.no_grad():
        reused = response_logps(ref.model, prompts, responses, pad_id=PAD, layout="packed")
    assert ref.model.trunk_runs == 0  # the trunk's hidden states came from the policy's forward
    assert_close(reused.tok_logps, expected.tok_logps, atol=1e-5, rtol=0)
    with torch.no_grad():  # other inputs than the policy's last forward: the reference runs the trunk
        own = response_logps(ref.model, prompts[:3], responses[:3], pad_id=PAD, layout="packed")
    assert ref.model.trunk_runs == 1
    n = sum(len(rs) for rs in responses[:3])
    assert_close(own.tok_logps, expected.tok_logps[:n, : own.tok_logps.shape[1]], atol=1e-5, rtol=0)
