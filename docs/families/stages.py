"""Stage times (CPU user / system seconds, minor page faults) of each path, forward + backward, on
the issue-17 workload through SmolLM2 cut to --layers blocks; one process, alternating paths.

    PYTHONPATH=. python docs/families/stages.py --layers 30
"""

from __future__ import annotations

import argparse
import resource

import torch

from workload import pairs_and_samples, smollm2

from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prompt_pass


class Clock:
    def __init__(self):
        self.rows, self._last = [], resource.getrusage(resource.RUSAGE_SELF)

    def mark(self, name):
        now = resource.getrusage(resource.RUSAGE_SELF)
        self.rows.append((name, now.ru_utime - self._last.ru_utime, now.ru_stime - self._last.ru_stime,
                          now.ru_minflt - self._last.ru_minflt))
        self._last = now


def run(model, prompts, both, path, pad, clock):
    if path == "packed":
        out = response_logps(model, prompts, both, pad_id=pad, layout="packed")
        clock.mark("forward")
    else:
        pp = prompt_pass(model, prompts, pad_id=pad)
        clock.mark("prompt pass forward")
        out = response_logps(model, prompts, both, pad_id=pad, prompt_pass=pp)
        clock.mark("response pass forward")
    out.logps.sum().backward()
    clock.mark("backward")
    model.zero_grad(set_to_none=True)
    clock.mark("zero_grad")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--keep-freed-memory", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    model, tok = smollm2(args.layers)
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    both = [p + s for p, s in zip(pairs, samples)]
    for path in ("packed", "prompt_pass"):  # warm-up: each path's allocations once
        run(model, prompts, both, path, pad, Clock())
    for rep in range(args.reps):
        for path in ("packed", "prompt_pass"):
            clock = Clock()
            run(model, prompts, both, path, pad, clock)
            total = sum(u + s for _, u, s, _ in clock.rows)
            print(f"rep {rep} {path}: {total:.2f} s cpu")
            for name, u, s, f in clock.rows:
                print(f"    {name:24s} user {u:6.2f}  sys {s:5.2f}  faults {f:8d}")


if __name__ == "__main__":
    main()
