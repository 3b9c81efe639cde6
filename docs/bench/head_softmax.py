"""The LM head's softmax over the vocabulary (hybridpo.fast.fused_head: the forward's logsumexp,
the backward's exp(logits - lse)·(-Σg)) on our kernel (csrc/head_softmax.cpp, or where the AVX-512
form does not load csrc/avx2/head_softmax_avx2.cpp) or on torch's ops: first the ops
alone on one of fused_head's blocks, then one SmolLM2 DPO batch's model work, the two alternated in
one process.

The ops alone: a block of 341 x 49,152 logits of a real head's spread (std 4), best of 7, each
against float64. The batch: a DPO step's model work on a batch of the smollm2-dpo workload (8
pairs, every weight trained; the policy's log-probs with grad, the reference's without, the
backward), every other speed setting as `auto` has it (the kernel is forced on where `auto` does
not take it); the two settings run one after the other `--repeats` times, medians per phase,
after their log-probs and gradients are compared.

    .venv/bin/python docs/bench/head_softmax.py --repeats 4 > docs/bench/amd/head_softmax.md
"""

import functools

import torch

import paired
from hybridpo.fast import fused_head, kernels
from hybridpo.fast.cpu_memory import configure

best = functools.partial(paired.best, reps=7)


def softmax(setting: str):
    """Within: the head's softmax as `setting` says ("kernel": our kernel, whether or not `auto`
    takes it on this CPU; "torch": torch's ops)."""
    return paired.swapped(fused_head, "softmax_kernel_pays", lambda: setting == "kernel")


def work(model, prompts, pairs, pad: int, setting: str):
    with softmax(setting):
        return paired.dpo_work(model, prompts, pairs, pad)


def ops_alone() -> None:
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(341, 49152, generator=g) * 4
    lse64 = logits.double().logsumexp(-1)
    lse, scale = lse64.float(), -torch.rand(341, generator=g)
    want = (logits.double() - lse64[:, None]).exp() * scale[:, None].double()
    buf = torch.empty_like(logits)
    print("| one block of 341 x 49,152 logits (best of 7) | torch | kernel |\n|---|---:|---:|")
    rows = []
    for kernel in (False, True):
        t_lse = best(lambda: fused_head._lse(logits, kernel))
        t_copy = best(lambda: buf.copy_(logits))
        t_soft = best(lambda: fused_head._scaled_softmax_(buf.copy_(logits), lse, scale, kernel)) - t_copy
        err_lse = float((fused_head._lse(logits, kernel).double() - lse64).abs().max())
        err_soft = float((fused_head._scaled_softmax_(buf.copy_(logits), lse, scale, kernel).double() - want).abs().max())
        rows.append((t_lse, t_soft, err_lse, err_soft))
    (a, b) = rows
    print(f"| forward: logsumexp per row | {a[0] * 1e3:.2f} ms | {b[0] * 1e3:.2f} ms |")
    print(f"| backward: exp(logits - lse) x scale, in place (less a copy's time) | {a[1] * 1e3:.2f} ms | {b[1] * 1e3:.2f} ms |")
    print(f"| logsumexp's largest error against float64 (values ~20-30) | {a[2]:.1e} | {b[2]:.1e} |")
    print(f"| the backward's largest error against float64 | {a[3]:.1e} | {b[3]:.1e} |\n")


def main() -> None:
    configure("on")  # as `hybridpo train` and the bench's runs have it on a CPU
    if kernels.load_either() is not None:
        raise SystemExit(f"the head's softmax kernel does not load here: {kernels.load_either()}")
    ops_alone()
    paired.dpo_two_settings(__doc__, "head softmax", ("torch", "kernel"), work)


if __name__ == "__main__":
    main()
