"""Peak resident memory of one forward + backward on SmolLM2-135M (fp32, full model), in a fresh
process per case: the peak is reset after loading (/proc/self/clear_refs), so it counts the step,
on top of what is resident before it. `getrusage` maxrss (lifetime peak, the GGUF load included)
is printed too.

    PYTHONPATH=. python docs/families/memory.py dpo        # 8 pairs: policy packed fwd+bwd + frozen-copy reference fwd
    PYTHONPATH=. python docs/families/memory.py packed     # 8 pairs + 16 samples, packed
    PYTHONPATH=. python docs/families/memory.py prompt_pass
"""

from __future__ import annotations

import copy
import resource
import sys

import torch

from workload import pairs_and_samples, smollm2

from hybridpo.cpu_memory import keep_freed_memory
from hybridpo.logprobs import response_logps
from hybridpo.prompt_cache import prompt_pass


def rss_gb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def main():
    case = sys.argv[1]
    keep = len(sys.argv) < 3 or sys.argv[2] != "default_malloc"
    torch.set_num_threads(2)
    if keep:
        keep_freed_memory()
    model, tok = smollm2()
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if case == "dpo" else None
    both = pairs if case == "dpo" else [p + s for p, s in zip(pairs, samples)]
    before = rss_gb("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    if case == "dpo":
        with torch.no_grad():
            response_logps(ref, prompts, both, pad_id=pad, layout="packed")
        out = response_logps(model, prompts, both, pad_id=pad, layout="packed")
    elif case == "packed":
        out = response_logps(model, prompts, both, pad_id=pad, layout="packed")
    else:
        out = response_logps(model, prompts, both, pad_id=pad, prompt_pass=prompt_pass(model, prompts, pad_id=pad))
    out.logps.sum().backward()
    peak = rss_gb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{case} ({'keep_freed_memory' if keep else 'default malloc'}): resident before the step {before:.2f} GB, "
          f"peak during it {peak:.2f} GB (+{peak - before:.2f}); lifetime maxrss {maxrss:.2f} GB")


if __name__ == "__main__":
    main()
