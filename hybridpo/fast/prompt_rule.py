"""When one prompt pass per step should serve both the sampler and the loss: a rule on lengths alone.

An online step (HyPO, RLHF, online DPO) can run its prompts once with grad (the prompt pass),
seed the sampler from it, and score the responses after it; or score prompt + responses in the
packed layout and let the sampler prefill the prompts itself (a no-grad forward). Sharing saves
that prefill, about 1/3 of the prompts' forward + backward; what it costs depends on the layout
the responses then take (docs/families/README.md measured it on SmolLM2-135M):

- attention "spans" (hybridpo.fast.varlen_attention: one unpadded row, attention span by span):
  both paths compute the same positions and the same scores, so sharing always pays;
- attention "masked": the packed layout bin-packs whole groups into rows of the widest group's
  width; after a prompt pass each prompt's responses fill ONE row, padded to the widest prompt's
  total response length, attending to the W-wide left-padded cache. On UltraFeedback (response
  lengths vary 20-fold) those rows were 49% padding: sharing took 1.9x the packed path's time.

Cost of a set of rows, per block, forward + backward = positions + a x attention scores, with
a = 1.5 x 4 d_q / (2 x block weights) (the scores' FLOPs against the projections' per position;
the CPU flash kernel costs 1.5x its FLOP share, measured on SmolLM2 blocks: 0.123 ms per position,
6.1e-5 ms per score, one thread). The LM head runs at the same positions on both paths and
drops out. Share iff

    cost(prompt pass) + cost(responses after it) < cost(packed rows) + cost(prompt pass) / 3

The decision is made BEFORE sampling (the pass seeds the sampler), so the responses are the ones
known then (HyPO's offline pair) plus the sampling budget: k samples of max_new_tokens each
(the most they can be; samples that stop early make the after-pass rows narrower, never wider).
Measured at 6 blocks (docs/families/README.md), the prototype picked the faster path on each of
four shapes: UltraFeedback pairs + samples (packed), UltraFeedback + 4 samples, TL;DR-like and
long prompts with short samples (shared).
"""

from __future__ import annotations

from hybridpo.forward import layout as lay

SDPA_FACTOR = 1.5  # measured: the CPU flash-attention kernel's cost per FLOP against the blocks' GEMMs


def score_weight(config) -> float:
    """a: one attention score's cost in units of one position's per-block projections + MLP
    (weights as hybridpo.bench.flops.ModelShape counts them: q, k, v, output, a 2- or 3-matrix MLP)."""
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    gated = config.model_type not in ("gpt_neox", "gpt2", "gptj", "opt")
    block = 2 * d * heads * head_dim + 2 * d * kv + (3 if gated else 2) * d * config.intermediate_size
    return SDPA_FACTOR * 4 * heads * head_dim / (2 * block)


def path_costs(prompt_lens: list[int], response_lens: list[list[int]], a: float, attention: str) -> dict:
    """Positions, attention scores and cost (positions + a x scores) per block of the two paths."""
    P = len(prompt_lens)
    groups = [p + sum(rs) for p, rs in zip(prompt_lens, response_lens)]
    if attention == "spans":
        prompt_scores = sum(p * (p + 1) // 2 for p in prompt_lens)
        response_scores = sum(n * (p + n) for p, rs in zip(prompt_lens, response_lens) for n in rs)
        packed = (sum(groups), prompt_scores + response_scores)
        prompt = (sum(prompt_lens), prompt_scores)
        after = (sum(groups) - sum(prompt_lens), response_scores)
    elif attention == "masked":
        R, T = len(lay.rows_of(groups)), max(groups)
        packed = (R * T, R * T * T)
        rows = lay.rows_of(prompt_lens)
        W = max(prompt_lens)
        Rp = len(rows) if len(rows) < P else P  # the prefill packs only when prompts share rows
        prompt = (Rp * W, Rp * W * W)
        Tr = max(sum(rs) for rs in response_lens) if any(response_lens) else 0
        after = (P * Tr, P * Tr * (W + Tr))
    else:
        raise ValueError(f"attention={attention!r}; choose from ['spans', 'masked']")
    cost = lambda pos_scores: pos_scores[0] + a * pos_scores[1]  # noqa: E731
    # the sampler's own prefill (no grad: 1/3 of a forward + backward) is the packed path's extra
    prefill = (lay.rows_of(prompt_lens), max(prompt_lens))
    sampler_prefill = cost((len(prefill[0]) * prefill[1], len(prefill[0]) * prefill[1] ** 2)) / 3
    return {
        "packed": {"positions": packed[0], "scores": packed[1], "cost": cost(packed) + sampler_prefill},
        "shared": {"positions": prompt[0] + after[0], "scores": prompt[1] + after[1], "cost": cost(prompt) + cost(after)},
    }


def decide(model, prompts: list[list[int]], responses: list[list[list[int]]] | None, samples: tuple[int, int] | None,
           attention: str) -> bool:
    """Whether one prompt pass should serve the sampler and the loss this step (see the module
    docstring): `responses` the offline responses of each prompt known now, `samples` (k,
    max_new_tokens) the sampling budget per prompt; `attention` the layout the forward will take,
    "spans" or "masked" (hybridpo.fast.share_prompt_rule resolves the setting by attention_for)."""
    from hybridpo.forward import hf

    prompt_lens = [len(p) for p in prompts]
    response_lens = [[len(r) for r in rs] for rs in responses] if responses is not None else [[] for _ in prompts]
    if samples is not None:
        k, new_tokens = samples
        response_lens = [lens + [new_tokens] * k for lens in response_lens]
    return shares(hf.unwrap_model(model).config, prompt_lens, response_lens, attention)


def shares(config, prompt_lens: list[int], response_lens: list[list[int]], attention: str) -> bool:
    """The rule on lengths: True iff the shared path costs less (attention "spans" or "masked")."""
    costs = path_costs(prompt_lens, response_lens, score_weight(config), attention)
    return costs["shared"]["cost"] < costs["packed"]["cost"]
