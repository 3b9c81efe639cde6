"""A decode-time KV-cache layer allocated once: the sampler's transformers decode loop writes each
step's keys / values into a buffer instead of concatenating a one-longer copy of the whole cache.

Why (measured on 2 CPU threads at the TL;DR shape): transformers' DynamicLayer copies the cache at
every token (O(T) per step), which was 43% of a TL;DR decode's CPU time. `update` returns views of
the filled part, so attention sees exactly the tensors the dynamic cache would hold (tested: the
same tokens and log-probs as with the dynamic cache). Chosen by `sample(kv_cache="auto")`
(hybridpo.fast.kv_cache_for): preallocated whenever the prefilled cache is made of plain layers.
"""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """Built from the prefilled layer with its rows repeated k times (sample j of prompt i is row
    i*k + j) and room for `capacity` columns; rows that finish leave by `batch_select_indices`."""

    def __init__(self, keys: Tensor, values: Tensor, k: int, capacity: int):
        super().__init__()
        P, H, W, D = keys.shape  # the prefilled prompts
        self.lazy_initialization(keys, values)
        self.keys = keys.new_empty((P * k, H, capacity, D))
        self.values = values.new_empty((P * k, H, capacity, values.shape[-1]))
        self.keys[:, :, :W] = keys.repeat_interleave(k, dim=0)
        self.values[:, :, :W] = values.repeat_interleave(k, dim=0)
        self.length = W

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self.keys.shape[-2]:
            raise RuntimeError(f"KV cache capacity {self.keys.shape[-2]} exceeded (need {end})")
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: Tensor) -> None:
        self.keys, self.values = self.keys[indices], self.values[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.keys = self.keys.repeat_interleave(repeats, dim=0)
        self.values = self.values.repeat_interleave(repeats, dim=0)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the decode cache is never cropped")


def preallocated_cache(kv: list[tuple[Tensor, Tensor]], k: int, capacity: int) -> DynamicCache:
    """A cache of PreallocatedLayers from per-layer (keys, values) (P, H, W, D), each row repeated k times."""
    cache = DynamicCache()
    cache.layers = [PreallocatedLayer(keys, values, k, capacity) for keys, values in kv]
    return cache
