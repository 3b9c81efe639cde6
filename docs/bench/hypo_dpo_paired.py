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

import statistics

import paired
from hybridpo.bench import flops
from hybridpo.bench.record import machine

PHASES = ["policy forward", "sampling", "reference forward", "backward", "total"]


def main() -> None:
    parser = paired.arguments(__doc__, 3)
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-hypo", args.batch)
    shape = flops.ModelShape.from_config(model.config)
    prompts, offline = paired.prompts_and_pairs(batch)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    needed = {}

    def dpo(seed: int) -> tuple[float, ...]:
        policy, reference, backward, total = paired.dpo_work(model, prompts, offline, pad)[1]
        fwd = sum(flops.forward_flops(shape, len(p), [len(r) for r in rs]) for p, rs in zip(prompts, offline))
        needed["dpo"] = (fwd, 0, fwd, 2 * fwd)
        return policy, 0.0, reference, backward, total

    def hypo(seed: int) -> tuple[float, ...]:
        samples, (prompts_s, sampling, policy, reference, backward, total) = paired.hypo_work(
            model, w, prompts, offline, pad, eos, seed)
        both = [o + s for o, s in zip(offline, samples.responses)]
        fwd = sum(flops.forward_flops(shape, len(p), [len(r) for r in rs]) for p, rs in zip(prompts, both))
        dec = sum(flops.decode_flops(shape, len(p), [len(r) for r in s]) for p, s in zip(prompts, samples.responses))
        needed["hypo"] = (fwd, dec, fwd, 2 * fwd)
        return prompts_s + policy, sampling, reference, backward, total

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
