"""speed.train_gemm (the log-prob forwards' and backwards' fp32 products on oneDNN or on MKL,
hybridpo.fast.onednn_gemm) on one SmolLM2 DPO batch, the two alternated in one process.

A DPO step's model work on a batch of the smollm2-dpo workload (8 pairs, every weight trained):
the policy's log-probs with grad, the reference's without (the same weights), the backward, every
other speed setting as `auto` has it. The two settings run one after the other `--repeats` times,
so a drift of the machine's load hits both alike; medians per phase. Before the timing, the two
settings' log-probs and gradients on this batch are compared. The optimizer is left out.

    .venv/bin/python docs/bench/train_gemm_paired.py --repeats 3 > docs/bench/amd/train_gemm_paired.md
"""

import statistics

import paired
from hybridpo.bench.record import machine


def main() -> None:
    parser = paired.arguments(__doc__, 3)
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-dpo", args.batch)
    prompts, pairs = paired.prompts_and_pairs(batch)
    pad = tokenizer.pad_token_id

    def step(setting: str, _repeat: int) -> tuple[float, ...]:
        times = paired.dpo_work(model, prompts, pairs, pad, train_gemm=setting)[1]
        model.zero_grad(set_to_none=True)
        return times

    settings = ("library", "onednn")
    agree = {}
    for setting in settings:
        logps, _ = paired.dpo_work(model, prompts, pairs, pad, train_gemm=setting)
        agree[setting] = (logps, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    (ll, gl), (lo, go) = agree["library"], agree["onednn"]
    grad_error = max(float((go[n] - gl[n]).norm() / gl[n].norm().clamp(min=1e-30)) for n in gl)
    times = paired.alternate(settings, step, args.repeats)
    tokens = sum(len(p) + len(c) + len(r) for p, (c, r) in zip(prompts, pairs))
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-dpo ({len(batch)} pairs, {tokens} tokens), "
          f"every weight trained, median of {args.repeats} alternated repeats.\n")
    print(f"onednn vs library on this batch: sequence log-probs within {float((lo - ll).abs().max()):.1e} "
          f"(of values up to {float(ll.abs().max()):.0f}); every parameter's gradient within {grad_error:.1e} of its norm\n")
    paired.table("speed.train_gemm", ["policy forward", "reference forward", "backward", "total"], times)
    library, onednn = (statistics.median(t[-1] for t in times[s]) for s in settings)
    print(f"\nonednn / library: {onednn / library:.3f} ({library - onednn:+.2f} s a step)")


if __name__ == "__main__":
    main()
