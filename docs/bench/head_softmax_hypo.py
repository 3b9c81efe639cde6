"""The LM head's softmax on csrc/head_softmax.cpp or on torch's ops (docs/bench/head_softmax.py)
on one SmolLM2 HyPO batch, the two alternated in one process.

The HyPO step's model work on a batch of the smollm2-hypo workload (docs/bench/paired.py's
hypo_work: the policy's prompt pass with grad, k = 2 samples of 53 tokens, the policy's log-probs
of pairs and samples after the pass, the reference's, the backward), every other speed setting as
`auto` has it. One seed per round, so both settings draw the same samples up to rounding; medians
per phase. The optimizer is left out.

    .venv/bin/python docs/bench/head_softmax_hypo.py --repeats 3 > docs/bench/amd/head_softmax_hypo.md
"""

import statistics

import paired
from head_softmax import softmax
from hybridpo.bench.record import machine


def main() -> None:
    args = paired.arguments(__doc__, 3).parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-hypo", args.batch)
    prompts, offline = paired.prompts_and_pairs(batch)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def step(setting: str, seed: int) -> tuple[float, ...]:
        with softmax(setting):
            times = paired.hypo_work(model, w, prompts, offline, pad, eos, seed)[1]
        model.zero_grad(set_to_none=True)
        return times

    settings = ("torch", "kernel")
    times = paired.alternate(settings, step, args.repeats)
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-hypo ({len(batch)} prompts x k = "
          f"{w.hypo_k} x {w.hypo_new_tokens} tokens), every weight trained, median of {args.repeats} alternated repeats.\n")
    paired.table("head softmax", ["prompt pass", "sampling", "policy log-probs", "reference", "backward", "total"], times)
    a, b = (statistics.median(t[-1] for t in times[s]) for s in settings)
    print(f"\nkernel / torch: {b / a:.3f} ({a - b:+.2f} s a step)")


if __name__ == "__main__":
    main()
