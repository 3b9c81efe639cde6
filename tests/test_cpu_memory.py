"""hybridpo.fast.cpu_memory: after keep_freed_memory, a freed large block is reused without page faults.

Each case runs in a fresh interpreter (the setting is process-wide and cannot be undone), which
mallocs, touches, frees and again mallocs + touches a 64 MB block, counting minor page faults of
the second touch. glibc's default serves such a block by mmap and unmaps it on free, so the second
touch faults on every 4 KB page; kept in the heap it faults on none.
"""

import subprocess
import sys

import pytest

from hybridpo.fast import cpu_memory

pytestmark = pytest.mark.skipif(cpu_memory._glibc() is None, reason="needs glibc (Linux)")

PROBE = """
import ctypes, resource, sys
from hybridpo.fast.cpu_memory import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
n = 64 << 20
def touch_fresh_block():
    p = libc.malloc(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(p, 1, n)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(p)
    return faults
touch_fresh_block()
print(took, touch_fresh_block())
"""


def second_touch_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_freed_block_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    took, faults = second_touch_faults("keep")
    assert took == "True"
    assert faults < pages // 100
    _, default_faults = second_touch_faults("default")
    assert default_faults > pages // 2  # the default maps the block afresh: what the setting saves

