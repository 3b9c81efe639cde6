"""speed.train_gemm (the log-prob forwards' and backwards' fp32 products on oneDNN or on MKL,
hybridpo.fast.onednn_gemm) on one SmolLM2 DPO batch, the two alternated in one process.

A DPO step's model work on a batch of the smollm2-dpo workload (8 pairs, every weight trained):
the policy's log-probs with grad, the reference's without (the same weights), the backward, every
other speed setting as `auto` has it. The two settings run one after the other `--repeats` times,
so a drift of the machine's load hits both alike; medians per phase. Before the timing, the two
settings' log-probs and gradients on this batch are compared. The optimizer is left out.

    .venv/bin/python docs/bench/train_gemm_paired.py --repeats 3 > docs/bench/amd/train_gemm_paired.md
"""

import paired


def main() -> None:
    paired.dpo_two_settings(__doc__, "speed.train_gemm", ("library", "onednn"),
                            lambda model, prompts, pairs, pad, setting: paired.dpo_work(model, prompts, pairs, pad, train_gemm=setting))


if __name__ == "__main__":
    main()
