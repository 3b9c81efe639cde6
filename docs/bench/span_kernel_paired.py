"""The span kernel (hybridpo.fast.varlen_attention: ours, csrc/span_attention.cpp, or the CPU
flash kernel) on one SmolLM2 DPO batch, the two alternated in one process.

A DPO step's model work on a batch of the smollm2-dpo workload (8 pairs, every weight trained):
the policy's log-probs with grad, the reference's without (the same weights), the backward,
elementwise chains compiled as `auto` does. The two kernels run one after the other `--repeats`
times, so a drift of the machine's load hits both alike; medians per phase. Before the timing,
the two kernels' log-probs and gradients on this batch are compared. The optimizer is left out.

    .venv/bin/python docs/bench/span_kernel_paired.py --repeats 3 > docs/bench/smollm2/span_kernel_paired.md
"""

import paired


def work(model, prompts, pairs, pad: int, kernel: str):
    # response_logps's span_kernel=, not an outer varlen_attention.kernel_scope: response_logps enters
    # the scope of its own setting, so an outer scope is overridden ("auto" on both arms)
    return paired.dpo_work(model, prompts, pairs, pad, span_kernel=kernel)


def main() -> None:
    paired.dpo_two_settings(__doc__, "span kernel", ("flash", "ours"), work)


if __name__ == "__main__":
    main()
