"""Where the time goes: packed layout vs prompt pass + response pass, forward + backward, on the
issue-17 workload (8 UltraFeedback pairs + 16 samples of 50 tokens) through SmolLM2's first
`--layers` blocks (real weights), in one process, alternating, so the ratios hold on a shared
machine. Prints positions computed per path, per-rep times, and a torch.profiler table per path.

    PYTHONPATH=. python docs/families/profile_prompt_pass.py --layers 4 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from workload import pairs_and_samples, smollm2

from hybridpo import logprobs as lp
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prompt_pass


def run(model, prompts, both, path, pad):
    if path == "packed":
        out = response_logps(model, prompts, both, pad_id=pad, layout="packed")
    else:
        pp = prompt_pass(model, prompts, pad_id=pad)
        out = response_logps(model, prompts, both, pad_id=pad, prompt_pass=pp)
    out.logps.sum().backward()
    model.zero_grad(set_to_none=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hybridpo.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as the training loop does (RunConfig.keep_freed_memory)
    model, tok = smollm2(args.layers)
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    both = [p + s for p, s in zip(pairs, samples)]
    real = sum(len(p) + sum(map(len, rs)) for p, rs in zip(prompts, both))
    packed = lp._pack(prompts, both, pad)
    R, T = packed.input_ids.shape
    W, Tr = max(map(len, prompts)), max(sum(map(len, rs)) for rs in both)
    prompt_rows = len(lp._rows_of([len(p) for p in prompts]))
    print(f"real tokens {real}; packed {R}x{T} = {R * T} positions, attention {R * T * T / 1e6:.1f}M scores")
    print(f"prompt pass {prompt_rows}x{W} = {prompt_rows * W} + responses {len(prompts)}x{Tr} = {len(prompts) * Tr} "
          f"positions, attention {len(prompts) * Tr * (W + Tr) / 1e6:.1f}M scores")
    times = {"packed": [], "prompt_pass": []}
    cpu = {"packed": [], "prompt_pass": []}
    run(model, prompts, both, "packed", pad)  # warm-up
    for _ in range(args.reps):
        for path in times:
            t, c = time.perf_counter(), time.process_time()
            run(model, prompts, both, path, pad)
            times[path].append(time.perf_counter() - t)
            cpu[path].append(time.process_time() - c)
    for path, ts in times.items():
        print(f"{path:12s} wall " + " ".join(f"{t:.2f}" for t in ts) + f"  min {min(ts):.2f} s; "
              f"cpu " + " ".join(f"{t:.2f}" for t in cpu[path]) + f"  min {min(cpu[path]):.2f} s")
    print(f"prompt_pass / packed = {min(times['prompt_pass']) / min(times['packed']):.2f} (wall), "
          f"{min(cpu['prompt_pass']) / min(cpu['packed']):.2f} (cpu)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for path in times:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run(model, prompts, both, path, pad)
            print(f"\n=== {path}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=50))


if __name__ == "__main__":
    main()
