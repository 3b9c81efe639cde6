"""One DPO forward + backward at batch 8 on SmolLM2-135M (full fine-tune, frozen-copy reference,
packed layout), CPU time by stage, one thread, freed memory kept (as the loop runs).

    PYTHONPATH=. python docs/families/dpo_step.py
"""

from __future__ import annotations

import copy

import torch

from stages import Clock
from workload import pairs_and_samples, smollm2

from hybridpo import logprobs as lp
from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.logprobs import response_logps
from hybridpo.losses import dpo_loss


def main():
    torch.set_num_threads(1)
    keep_freed_memory()
    model, tok = smollm2()
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    pad = tok.pad_token_id
    prompts, pairs, _ = pairs_and_samples(tok)
    packed = lp._pack(prompts, pairs, pad)
    print(f"DPO batch: {sum(map(len, prompts))} prompt + {sum(len(r) for rs in pairs for r in rs)} response tokens; "
          f"packed {tuple(packed.input_ids.shape)} = {packed.input_ids.numel()} positions; head at {int(packed.needs_head.sum())}")

    def step(clock):
        with torch.no_grad():
            r = response_logps(ref, prompts, pairs, pad_id=pad, layout="packed").logps.view(-1, 2)
        clock.mark("reference forward")
        p = response_logps(model, prompts, pairs, pad_id=pad, layout="packed").logps.view(-1, 2)
        clock.mark("policy forward")
        dpo_loss(p[:, 0], p[:, 1], r[:, 0], r[:, 1], 0.05).mean().backward()
        clock.mark("backward")
        model.zero_grad(set_to_none=True)

    step(Clock())
    for rep in range(2):
        clock = Clock()
        step(clock)
        print(f"rep {rep}: {sum(u + s for _, u, s, _ in clock.rows):.2f} s cpu  " +
              "  ".join(f"{n} {u + s:.2f}" for n, u, s, _ in clock.rows))


if __name__ == "__main__":
    main()
