"""The full-vocabulary part of a step on the issue-17 workload: SmolLM2's tied head (49,152 x 576)
at the U scored positions, forward + backward, split into the head matmul and the log-softmax
(logsumexp over 49k columns + the target gather, as logprobs._packed_tok_logps does it), with the
peak memory each adds. CPU time, min over reps, one thread; compare with stages.py's step times.

    PYTHONPATH=. python docs/families/vocab_share.py                  # times (freed memory kept, as the loop does)
    PYTHONPATH=. python docs/families/vocab_share.py default_malloc   # peak memory
"""

from __future__ import annotations

import time

import torch

from memory import rss_gb
from workload import pairs_and_samples, smollm2

from hybridpo import logprobs as lp
from hybridpo.cpu_memory import keep_freed_memory


def measure(fn, reps=3):
    fn()
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    open("/proc/self/clear_refs", "w").write("5")
    base = rss_gb("VmRSS")
    fn()
    return best, rss_gb("VmHWM") - base


def main():
    import sys

    torch.set_num_threads(1)
    keep = "default_malloc" not in sys.argv  # peak memory shows only with default malloc (freed blocks go back)
    if keep:
        keep_freed_memory()
    model, tok = smollm2(1)
    W = model.lm_head.weight.detach().clone().requires_grad_(True)  # (V, H), tied to the embedding in the model
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    g = torch.Generator().manual_seed(0)
    for name, responses in (("DPO pairs", pairs), ("pairs + 16 samples", [p + s for p, s in zip(pairs, samples)])):
        packed = lp._pack(prompts, responses, pad)
        U, M = int(packed.needs_head.sum()), len(packed.target_ids)
        h = torch.randn(U, W.shape[1], generator=g).mul_(3).requires_grad_(True)
        at, target = packed.target_head, packed.target_ids

        G = torch.randn(U, W.shape[0], generator=g)  # a stand-in for d loss / d logits

        def head_only():
            logits = h @ W.T  # (U, V)
            logits.backward(G)  # the matmul's backward (dh, dW) without any log-softmax

        def head_and_log_softmax():
            logits = h @ W.T
            tok_logps = logits[at, target] - logits.logsumexp(-1)[at]  # (M,)
            tok_logps.sum().backward()

        t_head, m_head = measure(head_only)
        t_all, m_all = measure(head_and_log_softmax)
        print(f"{name}: U = {U} head positions, M = {M} targets, (U, V) fp32 = {U * W.shape[0] * 4 / 2**30:.2f} GB")
        print(f"    head matmul fwd+bwd           {t_head:6.2f} s   peak +{m_head:.2f} GB")
        print(f"    + logsumexp / gather fwd+bwd  {t_all - t_head:6.2f} s   peak +{m_all:.2f} GB in all")


if __name__ == "__main__":
    main()
