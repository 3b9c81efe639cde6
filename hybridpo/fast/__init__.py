"""Speed tricks, fenced off: nothing that reads against the paper depends on them.

Each is chosen by a setting whose `auto` rule is stated here and was measured; each has an
equivalence test beside it (the same tokens / log-probs / numbers as the plain path):

| trick | module | setting | auto rule (measured) |
|---|---|---|---|
| lean GPT-NeoX decode step (weights folded and MKL-packed once per call; each prompt's cache read once for its k samples) | `neox_decode` | `speed.decoder` (`sample(decoder=)`) | "neox" for a plain GPT-NeoX model on CPU (transformers' decode step took 45 ms at the TL;DR shape with 16 samples, 2 threads; packing the weights alone then took a 53-token decode from 2.20 to 1.88 s; `hybridpo bench speed --workload decode` re-measures both); "transformers" elsewhere (never measured on a GPU, so never chosen there) |
| decode KV cache allocated once | `kv_cache` | `speed.kv_cache` (`sample(kv_cache=)`) | "preallocated" whenever the prefilled cache is plain layers (the dynamic cache's per-token copy was 43% of a TL;DR decode's CPU time); "dynamic" for other caches (sliding windows) |
| keep freed CPU memory for reuse (glibc mallopt) | `cpu_memory` | `speed.keep_freed_memory`, applied by the command line, never by a library call | on for a run on CPU: 15% less time, 1.5-2x the resident memory; off on a GPU |
"""

from __future__ import annotations

DECODERS = ("auto", "neox", "transformers")
KV_CACHES = ("auto", "preallocated", "dynamic")


def decoder_for(model, setting: str = "auto") -> str:
    """"neox" or "transformers" for `model` (the transformers model, unwrapped) under `setting`."""
    from hybridpo.fast import neox_decode

    if setting not in DECODERS:
        raise ValueError(f"decoder={setting!r}; choose from {list(DECODERS)}")
    if setting == "transformers":
        return setting
    reason = neox_decode.unsupported_reason(model)
    if setting == "neox":
        if reason is not None:
            raise ValueError(f"decoder='neox' is not available: {reason}")
        return "neox"
    import torch

    weight = next(model.parameters())
    # measured in fp32 on CPU only; under autocast (bf16 / fp16) the folded fp32 weights would meet
    # half-precision activations, so transformers' forward decodes there
    plain_fp32 = weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    return "neox" if reason is None and weight.device.type == "cpu" and plain_fp32 else "transformers"


def kv_cache_for(setting: str, plain_layers: bool) -> str:
    """"preallocated" or "dynamic" under `setting`, given whether the prefilled cache is plain layers."""
    if setting not in KV_CACHES:
        raise ValueError(f"kv_cache={setting!r}; choose from {list(KV_CACHES)}")
    if setting == "preallocated" and not plain_layers:
        raise ValueError("kv_cache='preallocated' needs a cache of plain layers (not sliding windows)")
    if setting == "auto":
        return "preallocated" if plain_layers else "dynamic"
    return setting
