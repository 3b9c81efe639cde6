"""The share-the-prompt-pass rule (hybridpo.fast.prompt_rule): its costs by hand, its choices on the
shapes it was measured on, and Policy.prompt_pass deciding before sampling."""

import pytest
import torch

from hybridpo.fast import share_prompt_rule
from hybridpo.fast.prompt_rule import path_costs, score_weight, shares

from test_varlen_attention import PAD, model_of


def test_path_costs_by_hand_masked():
    # prompts 4, 2; responses (3, 1) and (2,): groups 8 and 4 share one row of 8 + ... no: 8 + 4 > 8,
    # so 2 rows x 8. Prompt rows: 4 + 2 fit one row of 4? no (6 > 4): the prefill runs P = 2 rows x 4.
    c = path_costs([4, 2], [[3, 1], [2]], a=0.5, attention="masked")
    assert (c["packed"]["positions"], c["packed"]["scores"]) == (16, 2 * 64)
    # shared: prompts 2 x 4 (scores 2 x 16), then one row per prompt of the widest total response (4),
    # attending to 4 cached + 4: 2 x 4 positions, 2 x 4 x 8 scores
    assert (c["shared"]["positions"], c["shared"]["scores"]) == (8 + 8, 32 + 64)
    prefill = (8 + 0.5 * 32) / 3  # the sampler's own no-grad prefill, added to the packed path
    assert c["packed"]["cost"] == pytest.approx(16 + 0.5 * 128 + prefill)
    assert c["shared"]["cost"] == pytest.approx(16 + 0.5 * 96)


def test_path_costs_by_hand_spans_are_the_same_work_on_both_paths():
    c = path_costs([4, 2], [[3, 1], [2]], a=0.5, attention="spans")
    # prompts causal: 4·5/2 + 2·3/2 = 13; responses n (p + n): 3·7 + 1·5 + 2·4 = 34
    assert c["packed"]["positions"] == c["shared"]["positions"] == 12
    assert c["packed"]["scores"] == c["shared"]["scores"] == 47
    assert c["shared"]["cost"] < c["packed"]["cost"]  # by the prefill it saves


def test_smollm2_score_weight():
    from hybridpo import zoo

    config = zoo.random_config("llama", "smollm2-135m", 49152)
    # 1.5 x 4 x 576 / (2 x 3,538,944): docs/families/README.md's 4.9e-4
    assert score_weight(config) == pytest.approx(1.5 * 4 * 576 / (2 * 3_538_944))
    assert round(score_weight(config), 5) == 0.00049


# the profiled UltraFeedback batch (docs/families/README.md; the smollm2 workloads' first batch): prompt
# and pair lengths under SmolLM2's chat template, + 2 samples of 50
UF_PROMPTS = [39, 124, 60, 117, 51, 51, 52, 36]
UF_RESPONSES = [[417, 290, 50, 50], [40, 35, 50, 50], [52, 50, 50, 50], [28, 21, 50, 50], [21, 121, 50, 50],
                [394, 161, 50, 50], [389, 176, 50, 50], [33, 98, 50, 50]]


def test_the_rule_on_the_measured_shapes():
    """Masked rows: packed for the profiled UltraFeedback batch + samples (shared measured 1.37x slower
    at 6 blocks, 1.9x at 30), shared for shapes like the other three measured (UltraFeedback prompts
    + 4 samples of 50: 0.91; TL;DR-like: 0.85; long prompts, short samples: 0.82); spans: shared on
    all (the same work on both paths, minus the sampler's own prefill)."""
    from hybridpo import zoo

    config = zoo.random_config("llama", "smollm2-135m", 49152)
    g = torch.Generator().manual_seed(1)
    n = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    tldr = [n(142, 511) for _ in range(8)]
    masked = path_costs(UF_PROMPTS, UF_RESPONSES, score_weight(config), "masked")
    # packed 5 rows x 846; shared: the prompts in 5 rows x 124, then 8 rows x 807 (one per prompt, as wide
    # as the widest prompt's 417 + 290 + 2 x 50). The README's 4,250 and 7,108 were counted when a response
    # still carried the chat turn's trailing newline.
    assert (masked["packed"]["positions"], masked["shared"]["positions"]) == (4230, 7076)
    shapes = {
        "ultrafeedback pairs + 2 samples": (UF_PROMPTS, UF_RESPONSES, False),
        "ultrafeedback, 4 samples of 50": (UF_PROMPTS, [[50] * 4 for _ in UF_PROMPTS], True),
        "tldr-like": (tldr, [[n(20, 60), n(20, 60), 50, 50] for _ in tldr], True),
        "long prompts, 2 samples of 20": ([n(300, 500) for _ in range(8)], [[20, 20] for _ in range(8)], True),
    }
    for name, (prompts, responses, shared) in shapes.items():
        assert shares(config, prompts, responses, "masked") == shared, name
        assert shares(config, prompts, responses, "spans"), name


def test_share_prompt_rule_adds_the_sampling_budget():
    model = model_of("llama")
    prompts, pairs = [[5] * 4, [5] * 2], [[[5] * 3, [5]], [[5] * 2]]
    assert share_prompt_rule(model, prompts, pairs, samples=(2, 7), attention="spans")
    with pytest.raises(ValueError, match="choose from"):
        share_prompt_rule(model, prompts, pairs, attention="fast")


def test_policy_prompt_pass_follows_the_rule_before_sampling(monkeypatch):
    from hybridpo.models import Policy
    from hybridpo.models import policy as policy_module

    model = model_of("llama")
    policy = Policy(model, PAD, eos_id=0)
    prompts, pairs = [[3, 4, 5], [6, 7]], [[[8, 9], [10]], [[11], [12, 13]]]
    seen = []
    monkeypatch.setattr(policy_module, "share_prompt_rule", lambda m, p, r, s: seen.append((r, s)) or False)
    assert policy.prompt_pass(prompts, responses=pairs, samples=(2, 5)) is None  # the sampler prefills itself
    assert seen == [(pairs, (2, 5))]
    policy.share_prompt = "on"  # "on" shares whatever the rule says
    assert policy.prompt_pass(prompts, responses=pairs, samples=(2, 5)) is not None
    monkeypatch.setattr(policy_module, "share_prompt_rule", lambda m, p, r, s: True)
    policy.share_prompt = "auto"
    assert policy.prompt_pass(prompts) is not None
