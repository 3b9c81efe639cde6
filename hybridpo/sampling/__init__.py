"""What draws the online samples, behind one seam (`hybridpo.models.policy.Sampler`).

    seeds       per-example sampling seeds: a prompt's samples depend on (run seed, the example's
                place in the data stream, sample index), never on which process or micro-batch
                drew them (hybridpo.sampling.seeds)
    generate    a second sampler, transformers' `generate`, behind the same interface as the
                built-in one (hybridpo.models.policy.BuiltinSampler); chosen by `speed.sampler`

The contract an external engine (vLLM, ...) would meet is docs/generation_engine.md.
"""

from hybridpo.sampling.generate import GenerateSampler
from hybridpo.sampling.seeds import EVAL, TRAIN, example_seeds, mix, row_uniforms

__all__ = ["EVAL", "TRAIN", "GenerateSampler", "example_seeds", "mix", "row_uniforms"]
