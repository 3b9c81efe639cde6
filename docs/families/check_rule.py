"""Check layout_rule against measurement: both paths (forward + backward; the shared one also
without the sampler prefill it saves, which is not run here: its cost is added as a no-grad prompt
forward measured alone) on several batch shapes, through SmolLM2 cut to --layers blocks, one
process, one thread, CPU time min over reps.

    PYTHONPATH=. python docs/families/check_rule.py --layers 6
    PYTHONPATH=. python docs/families/check_rule.py --layers 6 --arch gpt-neox   # same shape, random GPT-NeoX
"""

from __future__ import annotations

import argparse
import time

import torch

from layout_rule import path_costs, score_weight
from workload import pairs_and_samples, smollm2

from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prefill, prompt_pass


def cpu_min(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def shapes(tok):
    prompts, pairs, samples = pairs_and_samples(tok)
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(100, 40000, (int(n),), generator=g).tolist()  # noqa: E731
    U = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    yield "UltraFeedback pairs + 2 samples of 50", prompts, [p + s for p, s in zip(pairs, samples)]
    yield "UltraFeedback, 4 samples of 50 (RLOO-like)", prompts, [[ids(50) for _ in range(4)] for _ in prompts]
    tl_prompts = [ids(U(142, 511)) for _ in range(8)]
    yield "TL;DR-like: prompts 142-511, pairs 20-60 + 2 samples of 50", tl_prompts, \
        [[ids(U(20, 60)), ids(U(20, 60)), ids(50), ids(50)] for _ in tl_prompts]
    yield "long prompts 300-500, 2 samples of 20", [ids(U(300, 500)) for _ in range(8)], [[ids(20), ids(20)] for _ in range(8)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--arch", default="smollm2", choices=["smollm2", "gpt-neox"])
    ap.add_argument("--only", type=int, default=None, help="run only shape number N (0-based)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    model, tok = smollm2(args.layers)
    if args.arch == "gpt-neox":  # SmolLM2's width, depth cut, MLP and vocabulary; NeoX blocks, untied head
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        c = model.config
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=args.layers,
            num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
            rotary_pct=0.25, tie_word_embeddings=False, attn_implementation="sdpa")).train()
    pad = tok.pad_token_id
    a = score_weight(model.config)
    print(f"score weight a = {a:.2e}")

    for n, (name, prompts, responses) in enumerate(shapes(tok)):
        if args.only is not None and n != args.only:
            continue
        def packed():
            response_logps(model, prompts, responses, pad_id=pad, layout="packed").logps.sum().backward()
            model.zero_grad(set_to_none=True)

        def shared():
            pp = prompt_pass(model, prompts, pad_id=pad)
            response_logps(model, prompts, responses, pad_id=pad, prompt_pass=pp).logps.sum().backward()
            model.zero_grad(set_to_none=True)

        def sampler_prefill():
            with torch.no_grad():
                prefill(model, prompts, pad)

        t_packed = cpu_min(packed, args.reps) + cpu_min(sampler_prefill, args.reps)
        t_shared = cpu_min(shared, args.reps)
        c = path_costs([len(p) for p in prompts], [[len(r) for r in rs] for rs in responses], a)
        predicted = c["shared"]["cost"] / c["packed"]["cost"]
        print(f"{name}\n    positions packed {c['packed']['positions']}, shared {c['shared']['positions']}; "
              f"measured shared / (packed + prefill) = {t_shared:.2f} / {t_packed:.2f} s = {t_shared / t_packed:.2f}; "
              f"rule's body-cost ratio {predicted:.2f} -> {'shared' if predicted < 1 else 'packed'}")


if __name__ == "__main__":
    main()
