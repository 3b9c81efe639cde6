"""The span kernel (hybridpo.fast.varlen_attention: ours, csrc/span_attention.cpp, or the CPU
flash kernel) on one SmolLM2 DPO batch, the two alternated in one process.

A DPO step's model work on a batch of the smollm2-dpo workload (8 pairs, every weight trained):
the policy's log-probs with grad, the reference's without (the same weights), the backward,
elementwise chains compiled as `auto` does. The two kernels run one after the other `--repeats`
times, so a drift of the machine's load hits both alike; medians per phase. Before the timing,
the two kernels' log-probs and gradients on this batch are compared. The optimizer is left out.

    .venv/bin/python docs/bench/span_kernel_paired.py --repeats 3 > docs/bench/smollm2/span_kernel_paired.md
"""

import statistics

import paired
from hybridpo.bench.record import machine
from hybridpo.fast import varlen_attention


def main() -> None:
    parser = paired.arguments(__doc__, 4)
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-dpo", args.batch)
    prompts, pairs = paired.prompts_and_pairs(batch)
    pad = tokenizer.pad_token_id

    def forward_backward(kernel: str):
        with varlen_attention.kernel_scope(kernel):
            return paired.dpo_work(model, prompts, pairs, pad)

    def step(kernel: str, _repeat: int) -> tuple[float, ...]:
        times = forward_backward(kernel)[1]
        model.zero_grad(set_to_none=True)
        return times

    settings = ("flash", "ours")
    agree = {}
    for kernel in settings:
        logps, _ = forward_backward(kernel)
        agree[kernel] = (logps, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    (lf, gf), (lo, go) = agree["flash"], agree["ours"]
    grad_error = max(float((go[n] - gf[n]).norm() / gf[n].norm().clamp(min=1e-30)) for n in gf)
    times = paired.alternate(settings, step, args.repeats)
    tokens = sum(len(p) + len(c) + len(r) for p, (c, r) in zip(prompts, pairs))
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-dpo ({len(batch)} pairs, {tokens} tokens), "
          f"every weight trained, median of {args.repeats} alternated repeats.\n")
    print(f"ours vs flash on this batch: sequence log-probs within {float((lo - lf).abs().max()):.1e} "
          f"(of values up to {float(lf.abs().max()):.0f}); every parameter's gradient within {grad_error:.1e} of its norm\n")
    paired.table("span kernel", ["policy forward", "reference forward", "backward", "total"], times)
    flash, ours = (statistics.median(t[-1] for t in times[s]) for s in settings)
    print(f"\nours / flash: {ours / flash:.3f} ({flash - ours:+.2f} s a step)")


if __name__ == "__main__":
    main()
