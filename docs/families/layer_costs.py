"""One SmolLM2 block, forward + backward, on the exact inputs each path gives it on the issue-17
workload: the packed layout (rows of prompt | chosen | rejected | s1 | s2, bin-packed) and the
response pass after a prompt pass (one row per prompt, its responses only, attending to W cached
prompt keys). Then the block's parts apart: projections + MLP (per position), SDPA with its float
mask, the cache concatenation + GQA repeat. CPU time, min over reps, one thread.

    PYTHONPATH=. python docs/families/layer_costs.py
"""

from __future__ import annotations

import time

import torch
from transformers.cache_utils import DynamicCache

from workload import pairs_and_samples, smollm2

from hybridpo import logprobs as lp
from hybridpo.cpu_memory import keep_freed_memory


def cpu_min(fn, reps=4):
    fn()
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def main():
    torch.set_num_threads(1)
    keep_freed_memory()
    model, tok = smollm2(2)
    layer, rotary = model.model.layers[1], model.model.rotary_emb
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    both = [p + s for p, s in zip(pairs, samples)]
    H = model.config.hidden_size
    g = torch.Generator().manual_seed(0)

    # packed inputs
    packed = lp._pack(prompts, both, pad)
    R, T = packed.input_ids.shape
    mask_p = lp.packed_attention_mask(packed.segment, torch.float32, packed.group)
    x_p = torch.randn(R, T, H, generator=g, requires_grad=True)
    pe_p = rotary(x_p, packed.position_ids)

    # response pass inputs (as logprobs._after_prompt_tok_logps builds them)
    P, W = len(prompts), max(map(len, prompts))
    Tr = max(sum(map(len, rs)) for rs in both)
    segment = torch.full((P, Tr), -1, dtype=torch.long)
    pos = torch.zeros((P, Tr), dtype=torch.long)
    for i, (p, rs) in enumerate(zip(prompts, both)):
        s = 0
        for j, r in enumerate(rs):
            segment[i, s : s + len(r)] = j + 1
            pos[i, s : s + len(r)] = torch.arange(len(p), len(p) + len(r))
            s += len(r)
    attn = torch.zeros((P, W), dtype=torch.long)
    for i, p in enumerate(prompts):
        attn[i, W - len(p):] = 1
    mask_r = lp.after_prompt_attention_mask(segment, attn, torch.float32)
    x_r = torch.randn(P, Tr, H, generator=g, requires_grad=True)
    pe_r = rotary(x_r, pos)
    kv_heads, hd = model.config.num_key_value_heads, model.config.head_dim
    past_k = torch.randn(P, kv_heads, W, hd, generator=g, requires_grad=True)
    past_v = torch.randn(P, kv_heads, W, hd, generator=g, requires_grad=True)

    print(f"packed: hidden {tuple(x_p.shape)} ({R * T} positions), mask {tuple(mask_p.shape)} {mask_p.numel() * 4 / 2**20:.0f} MiB")
    print(f"response pass: hidden {tuple(x_r.shape)} ({P * Tr} positions), mask {tuple(mask_r.shape)} "
          f"{mask_r.numel() * 4 / 2**20:.0f} MiB, cache {W} + {Tr} keys")

    def block_packed():
        out = layer(x_p, attention_mask=mask_p, position_ids=packed.position_ids, position_embeddings=pe_p)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    def block_response():
        cache = DynamicCache(ddp_cache_data=[(past_k, past_v)] * 2)
        out = layer(x_r, attention_mask=mask_r, position_ids=pos, position_embeddings=pe_r, past_key_values=cache, use_cache=True)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    rows = {}
    rows["block, packed"] = cpu_min(block_packed)
    rows["block, response pass"] = cpu_min(block_response)

    # parts: per-position work (norms, projections, MLP) without attention
    def per_position(x):
        def f():
            h = layer.input_layernorm(x)
            a = layer.self_attn
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
            o = a.o_proj(q)
            y = x + o
            y = y + layer.mlp(layer.post_attention_layernorm(y))
            (y.sum() + k.sum() + v.sum()).backward()
        return f

    rows["projections + MLP, packed"] = cpu_min(per_position(x_p))
    rows["projections + MLP, response pass"] = cpu_min(per_position(x_r))

    heads = model.config.num_attention_heads
    rep = heads // kv_heads

    def sdpa(B, Tq, Tk, mask):
        q = torch.randn(B, heads, Tq, hd, generator=g, requires_grad=True)
        k = torch.randn(B, heads, Tk, hd, generator=g, requires_grad=True)
        v = torch.randn(B, heads, Tk, hd, generator=g, requires_grad=True)
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

    rows["SDPA (float mask), packed"] = cpu_min(sdpa(R, T, T, mask_p))
    rows["SDPA (float mask), response pass"] = cpu_min(sdpa(P, Tr, W + Tr, mask_r))
    bool_r = mask_r == 0
    rows["SDPA (bool mask), response pass"] = cpu_min(sdpa(P, Tr, W + Tr, bool_r))

    def cat_repeat():
        k_new = torch.randn(P, kv_heads, Tr, hd, generator=g, requires_grad=True)
        k = torch.cat([past_k, k_new], dim=-2)
        k = k[:, :, None].expand(P, kv_heads, rep, W + Tr, hd).reshape(P, heads, W + Tr, hd)
        v = torch.cat([past_v, k_new], dim=-2)
        v = v[:, :, None].expand(P, kv_heads, rep, W + Tr, hd).reshape(P, heads, W + Tr, hd)
        (k.sum() + v.sum()).backward()

    def repeat_packed():
        k_new = torch.randn(R, kv_heads, T, hd, generator=g, requires_grad=True)
        k = k_new[:, :, None].expand(R, kv_heads, rep, T, hd).reshape(R, heads, T, hd)
        v = k_new[:, :, None].expand(R, kv_heads, rep, T, hd).reshape(R, heads, T, hd)
        (k.sum() + v.sum()).backward()

    rows["cache cat + GQA repeat, response pass"] = cpu_min(cat_repeat)
    rows["GQA repeat, packed"] = cpu_min(repeat_packed)
    rows["mask build, packed (once per call)"] = cpu_min(lambda: lp.packed_attention_mask(packed.segment, torch.float32, packed.group))
    rows["mask build, response pass (once per call)"] = cpu_min(lambda: lp.after_prompt_attention_mask(segment, attn, torch.float32))
    for name, t in rows.items():
        print(f"  {t * 1e3:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
