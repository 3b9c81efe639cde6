"""Per-example sampling seeds: the samples of a prompt are a function of the example, not of the
process or the micro-batch that drew them.

With one random stream per process, the tokens a prompt gets depend on how many rows share the
stream and in which order they consume it: a prompt sampled by one process in a batch of 4 draws
other tokens than the same prompt sampled by one of two processes in a batch of 2. Here every
example gets its own seed,

    seed(example) = mix(run seed, stream, key...)      e.g. (run.seed, TRAIN, stream position i)

where the training key is the example's position in the data stream (hybridpo.loop: position i
holds permutation_epoch(i mod n)), unique over the run, the same whatever the number of processes
and the split of the global batch into micro-batches, and restored by --resume (the data position
is checkpointed). Sample j of that prompt uses mix(seed, j). Held-out evaluation uses (run.seed,
EVAL, step, index in the eval split).

`mix` is splitmix64 (Steele, Lea & Flood 2014) folded over the keys: cheap, and nearby keys
give unrelated seeds.
"""

from __future__ import annotations

import torch

TRAIN, EVAL = 0, 1  # the `stream` key of example_seeds: training examples, held-out examples

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def mix(*keys: int) -> int:
    """A 63-bit seed (torch.Generator.manual_seed takes it) from any number of integer keys."""
    h = 0
    for key in keys:
        h = _splitmix64(h ^ (int(key) & _MASK))
    return h >> 1


def example_seeds(run_seed: int, stream: int, *keys, indices: list[int]) -> list[int]:
    """One seed per example: mix(run_seed, stream, *keys, index) for each index."""
    return [mix(run_seed, stream, *keys, i) for i in indices]


def row_uniforms(seeds: list[int], k: int, steps: int, device=None) -> torch.Tensor:
    """U[0, 1) noise for P prompts x k samples x `steps` tokens: row i*k + j (sample j of prompt i)
    comes from a generator seeded mix(seeds[i], j), so it depends on nothing else.   -> (P*k, steps) fp32

    A sampler that draws token t of row n by inverting the CDF at U[n, t] gives every sample the
    same tokens however the prompts are batched (up to float rounding of the logits).
    """
    rows = []
    for seed in seeds:
        for j in range(k):
            g = torch.Generator().manual_seed(mix(seed, j))
            rows.append(torch.rand(steps, generator=g))
    return torch.stack(rows).to(device) if rows else torch.zeros(0, steps, device=device)
