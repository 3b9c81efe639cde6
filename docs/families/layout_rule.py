"""A prototype of the rule that picks, per step, between the packed layout and a shared prompt
pass, from the token lengths alone (no forward). Not wired into the library (logprobs /
prompt_cache are being restructured); `check_rule.py` beside it measures it.

What the two paths compute, per block, forward + backward (the LM head and log-softmax run at the
same U positions in both, so they cancel out of the choice):
- packed: the groups (prompt | its responses) bin-packed into R rows of width T (logprobs._rows_of):
  R*T positions, R*T*T attention scores.
- shared: the prompts packed into R' rows of width W' (the prompt pass), then ONE ROW PER PROMPT
  holding its responses, padded to the widest prompt's total response length Tr, attending to W
  cached keys + itself: R'*W' + P*Tr positions, R'*W'^2 + P*Tr*(W + Tr) scores.
  Its gain: the sampler needs no prefill of its own (a no-grad forward of the prompts: about 1/3
  of their forward + backward). So sharing pays iff
      cost(prompt pass) + cost(response rows) < cost(packed rows) + cost(prompt pass) / 3.
Cost of a row set = positions + a * scores; a = the cost of one attention score relative to one
position's projections + MLP. From FLOPs: a = 4 * heads * head_dim / (2 * block parameters)
(QK^T and PV per score vs the block's matmuls per position); measured on SmolLM2 blocks
(layer_costs.py: 0.123 ms per position, 6.1e-5 ms per score, fwd + bwd, one thread) the CPU
flash-attention kernel costs 1.5x its FLOPs' share, hence SDPA_FACTOR.
"""

from __future__ import annotations

SDPA_FACTOR = 1.5  # measured: SDPA's CPU flash kernel (float mask) per FLOP vs the blocks' GEMMs


def rows_of(sizes: list[int]) -> list[list[int]]:
    """First-fit decreasing into rows no wider than the widest (as hybridpo.logprobs._rows_of)."""
    width, rows, free = max(sizes), [], []
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):
        r = next((r for r, room in enumerate(free) if room >= sizes[g]), None)
        if r is None:
            rows.append([]), free.append(width)
            r = len(rows) - 1
        rows[r].append(g)
        free[r] -= sizes[g]
    return rows


def score_weight(config) -> float:
    """a: one attention score's cost in units of one position's per-block matmuls."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    gated = getattr(config, "hidden_act", "gelu") in ("silu", "swiglu") or "llama" in config.model_type or "mistral" in config.model_type or "qwen" in config.model_type
    block = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + hidden * inter * (3 if gated else 2)
    return SDPA_FACTOR * 4 * heads * head_dim / (2 * block)


def path_costs(prompt_lens: list[int], response_lens: list[list[int]], a: float) -> dict:
    """Positions, scores and cost (positions + a * scores) of each path's body, per block."""
    groups = [p + sum(rs) for p, rs in zip(prompt_lens, response_lens)]
    R, T = len(rows_of(groups)), max(groups)
    packed_pos, packed_scores = R * T, R * T * T
    Rp, W = len(rows_of(prompt_lens)), max(prompt_lens)
    P, Tr = len(prompt_lens), max(sum(rs) for rs in response_lens)
    prompt_pos, prompt_scores = Rp * W, Rp * W * W
    resp_pos, resp_scores = P * Tr, P * Tr * (W + Tr)
    cost = lambda pos, sc: pos + a * sc  # noqa: E731
    c_prompt = cost(prompt_pos, prompt_scores)
    return {
        "packed": {"positions": packed_pos, "scores": packed_scores,
                   "cost": cost(packed_pos, packed_scores) + c_prompt / 3},  # + the sampler's own no-grad prefill
        "shared": {"positions": prompt_pos + resp_pos, "scores": prompt_scores + resp_scores,
                   "cost": c_prompt + cost(resp_pos, resp_scores)},
    }


def prefer_prompt_pass(prompt_lens, response_lens, config) -> bool:
    c = path_costs(prompt_lens, response_lens, score_weight(config))
    return c["shared"]["cost"] < c["packed"]["cost"]
