"""Keep freed CPU memory for reuse: no page faults per training step.

glibc's malloc hands a large block (≥ 128 KB, adaptively up to 32 MB) to the program as a fresh
`mmap` and gives it back to the OS when freed. A training step allocates the same large tensors
every step (activations, logits, gradients), so every step the kernel maps and zeroes those pages
again, one 4 KB page fault at a time. Measured on the hypo benchmark (2 CPU threads, Pythia-70m
shape): 5.3 million page faults and 20 s of kernel time in 6 HyPO steps; the DPO step spent ~13%
of its CPU time in the kernel.

`keep_freed_memory` tells glibc to serve every allocation from its heap and never trim it, so a
freed tensor's memory is reused by the next step's tensors with no kernel work.

The price is memory. Resident memory never shrinks, and as batch shapes vary the heap fragments:
freed blocks are split for smaller tensors and a larger one then needs fresh heap. Measured on the
hypo benchmark's data (Pythia-70m shape, batch 8, RSS before each step): DPO over 32 steps 3.3 ->
4.9 GB, flat from step 24 (glibc's default: 3.2-3.5 GB) for 15% less time; HyPO 4.3 -> 6.8-7.4
GB, flat after ~16 steps (two runs; default: ~3.9 GB) for 15% less time. Memory that grows with
every new batch shape and never flattens is another matter: oneDNN's primitive caches, which
hybridpo.fast.onednn_gemm caps. On a GPU run the large tensors live on the device, so the setting
changes little either way. Elsewhere than glibc (macOS, musl, Windows) it does nothing.

It changes the allocator of the whole process, so only the command line sets it (`hybridpo train`
and each `hybridpo bench speed` process call `configure(cfg.speed.keep_freed_memory)`); a library
caller of `hybridpo.loop.train` keeps its process's allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1  # free memory at the heap's top above this is returned to the OS
_M_TOP_PAD = -2  # extra bytes requested each time the heap grows
_M_MMAP_MAX = -4  # most blocks served by mmap at once; 0 = none, every block from the heap

_NEVER_TRIM = 2**31 - 1  # mallopt takes a C int: ~2 GB of free heap top before any is returned
_TOP_PAD = 64 << 20  # grow the heap 64 MB at a time instead of page by page


def configure(setting: str) -> bool:
    """Apply `speed.keep_freed_memory`: "on", "off", or "auto" (on when no GPU will be used); True when on."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"keep_freed_memory={setting!r}; choose from ['auto', 'on', 'off']")
    if setting == "off":
        return False
    if setting == "auto":
        import torch

        if torch.cuda.is_available():
            return False
    return keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Serve allocations from glibc's heap and keep freed memory; True when it took effect.
    Idempotent; call it before the first step (later allocations are the ones it affects)."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_TOP_PAD, _TOP_PAD),
    ))


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such symbol)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
