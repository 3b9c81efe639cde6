"""The LM head's dW (hybridpo.fast.fused_head's backward, summed block by block) on oneDNN or as
an in-place addmm on MKL, on one SmolLM2 DPO batch, the two alternated in one process.

A DPO step's model work on a batch of the smollm2-dpo workload (8 pairs, every weight trained):
the policy's log-probs with grad, the reference's without (the same weights), the backward, every
speed setting as `auto` has it (on an AMD EPYC from Zen 5: the products on oneDNN). The "addmm"
setting runs hybridpo.fast.onednn_gemm.add_mm_tn's fallback, torch's addmm_, for the head's dW
alone. The two run one after the other `--repeats` times, so a drift of the machine's load hits
both alike; medians per phase. Before the timing, the two settings' log-probs and gradients on this
batch are compared. The optimizer is left out. The op alone: docs/bench/head_dw.py.

    .venv/bin/python docs/bench/head_dw_paired.py --repeats 3 > docs/bench/amd/head_dw_paired.md
"""

import paired
from hybridpo.fast import onednn_gemm

_ONEDNN = onednn_gemm.add_mm_tn


def head_dw(setting: str):
    """Within: the head's dW as `setting` says ("onednn": as `auto` has it; "addmm": MKL's addmm_)."""
    return paired.swapped(onednn_gemm, "add_mm_tn", lambda acc, a, b, onednn=None: _ONEDNN(acc, a, b, onednn=False),
                          when=setting == "addmm")


def work(model, prompts, pairs, pad: int, setting: str):
    with head_dw(setting):
        return paired.dpo_work(model, prompts, pairs, pad)


def main() -> None:
    paired.dpo_two_settings(__doc__, "head dW", ("addmm", "onednn"), work)


if __name__ == "__main__":
    main()
