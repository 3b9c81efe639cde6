"""Where a HyPO step loses against a DPO step: both steps' model work on one SmolLM2 batch,
alternated in one process, phase by phase, with each phase's needed FLOPs and rate.

DPO: the policy's log-probs of the 8 pairs with grad, the reference's without (the same weights),
the backward. HyPO (k = 2, 53 new tokens, as the smollm2-hypo workload): the policy's prompt pass
with grad, the samples drawn from it, the policy's log-probs of pairs and samples after the pass,
the reference's of both, the backward. Speed settings as `auto` resolves them. The optimizer and
the loss arithmetic are left out. The needed FLOPs are hybridpo.bench.flops' (the prompt pass is
counted in the policy forward, as the bench counts it).

    .venv/bin/python docs/bench/hypo_dpo_paired.py --repeats 3 > docs/bench/smollm2/hypo_dpo_paired.md
"""

import argparse
import statistics
import time

import torch

import paired
from hybridpo import rollout
from hybridpo.bench import flops
from hybridpo.bench.record import machine
from hybridpo.forward import response_logps
from hybridpo.forward.prompts import prompt_pass

PHASES = ["policy forward", "sampling", "reference forward", "backward", "total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=0, help="which batch of the workload's 64 pairs")
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-hypo", args.batch)
    shape = flops.ModelShape.from_config(model.config)
    prompts = [p.prompt_ids for p in batch]
    offline = [[p.chosen_ids, p.rejected_ids] for p in batch]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    needed = {}

    def dpo(seed: int) -> tuple[float, ...]:
        t0 = time.perf_counter()
        out = response_logps(model, prompts, offline, pad_id=pad)
        t1 = time.perf_counter()
        with torch.no_grad():
            response_logps(model, prompts, offline, pad_id=pad)
        t2 = time.perf_counter()
        out.logps.sum().backward()
        t3 = time.perf_counter()
        fwd = sum(flops.forward_flops(shape, len(p), [len(r) for r in rs]) for p, rs in zip(prompts, offline))
        needed["dpo"] = (fwd, 0, fwd, 2 * fwd)
        return t1 - t0, 0.0, t2 - t1, t3 - t2, t3 - t0

    def hypo(seed: int) -> tuple[float, ...]:
        t0 = time.perf_counter()
        pp = prompt_pass(model, prompts, pad_id=pad)
        t1 = time.perf_counter()
        samples = rollout.sample(model, prompts, w.hypo_k, max_new_tokens=w.hypo_new_tokens, eos_id=eos, pad_id=pad,
                                 generator=torch.Generator().manual_seed(seed), prompt_pass=pp)
        t2 = time.perf_counter()
        both = [o + s for o, s in zip(offline, samples.responses)]
        out = response_logps(model, prompts, both, pad_id=pad, prompt_pass=pp)
        t3 = time.perf_counter()
        with torch.no_grad():
            response_logps(model, prompts, both, pad_id=pad)
        t4 = time.perf_counter()
        out.logps.sum().backward()
        t5 = time.perf_counter()
        fwd = sum(flops.forward_flops(shape, len(p), [len(r) for r in rs]) for p, rs in zip(prompts, both))
        dec = sum(flops.decode_flops(shape, len(p), [len(r) for r in s]) for p, s in zip(prompts, samples.responses))
        needed["hypo"] = (fwd, dec, fwd, 2 * fwd)
        return (t1 - t0) + (t3 - t2), t2 - t1, t4 - t3, t5 - t4, t5 - t0

    def step(method: str, seed: int) -> tuple[float, ...]:
        times = (dpo if method == "dpo" else hypo)(seed)
        model.zero_grad(set_to_none=True)
        return times

    times = paired.alternate(("dpo", "hypo"), step, args.repeats)
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-hypo ({len(batch)} pairs; HyPO k = "
          f"{w.hypo_k} x {w.hypo_new_tokens} tokens), every weight trained, median of {args.repeats} alternated repeats.\n")
    paired.table("step", PHASES, times)
    print("\n| phase | DPO GFLOP | HyPO GFLOP | FLOP ratio | time ratio | DPO GFLOP/s | HyPO GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {m: [statistics.median(c) for c in zip(*runs)] for m, runs in times.items()}
    for i, phase in enumerate(PHASES):
        d = needed["dpo"][i] if i < 4 else sum(needed["dpo"])
        h = needed["hypo"][i] if i < 4 else sum(needed["hypo"])
        td, th = med["dpo"][i], med["hypo"][i]
        ratio = f"{h / d:.2f}" if d else "-"
        tratio = f"{th / td:.2f}" if td else "-"
        rate_d = f"{d / td / 1e9:.0f}" if td else "-"
        print(f"| {phase} | {d / 1e9:.0f} | {h / 1e9:.0f} | {ratio} | {tratio} | {rate_d} | {h / th / 1e9:.0f} |")
    total_ratio = med["hypo"][-1] / med["dpo"][-1]
    flop_ratio = sum(needed["hypo"]) / sum(needed["dpo"])
    print(f"\nHyPO / DPO model work: {total_ratio:.2f}x against a needed-FLOP ratio of {flop_ratio:.2f}: "
          f"{total_ratio / flop_ratio:.2f}x of it")


if __name__ == "__main__":
    main()
