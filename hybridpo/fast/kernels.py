"""Our C++ kernels (csrc/): built once, loaded as one library, torch.ops.hybridpo_panel.

Every csrc/*.cpp is compiled into one shared library once per source (the headers included),
torch version, CPU and compiler, with the C++ compiler on PATH (what torch.compile's CPU backend
needs too), with OpenMP so that at::parallel_for runs on torch's threads (without it the decode
kernel ran on one thread: 3.70 s for a 2.19 s decode), into ~/.cache/hybridpo/kernels
(HYBRIDPO_KERNEL_DIR overrides); the finished file is renamed into place, so a concurrent build
never loads half a library. The kernels use AVX-512F; where they cannot build or load (no
compiler, no AVX-512F) `load()` says why, and every caller keeps its library path.

csrc/avx2/ is a second library, torch.ops.hybridpo_panel_avx2, built the same way where AVX2 is
(`load_avx2()`): the decode's few-row products, the Llama block fused around them, training
attention span by span and the LM head's softmax, for CPUs without AVX-512.

Users: hybridpo.fast.panel_linear (the decode's few-row products, the fused Llama block),
hybridpo.fast.varlen_attention (training attention span by span) and hybridpo.fast.fused_head (the
head's softmax); the last two take whichever library loads (`either_ops()`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")


def load() -> str | None:
    """None when the library is built and loaded here; otherwise why not."""
    return _load()


@functools.cache
def vendor() -> str:
    """The CPU's vendor_id ("GenuineIntel", "AuthenticAMD"; "" where /proc/cpuinfo has none)."""
    return _cpuinfo("vendor_id")


# what "auto" may take of ours, by name: the decode's panel product and the Llama block fused
# around it (hybridpo.fast.panel_linear), training attention span by span (varlen_attention), the
# LM head's softmax (fused_head)
KERNELS = ("decode", "spans", "head")

# the CPUs "auto" takes each AVX-512 kernel (csrc/*.cpp) on, where it was measured against the
# library path (MKL's packed product for the decode, torch's CPU flash attention for the spans,
# torch's logsumexp and exp for the head's softmax): every Intel CPU with AVX-512 (a Xeon with AMX,
# docs/bench/smollm2/), and AMD's as (family, first model, last model, generation, the kernels
# measured there): the EPYCs of Zen 4 (family 25, models 0x10-0x1F; one of model 17, docs/bench/zen4/:
# a 53-token decode 6.64 -> 1.79 s with the block fused, one causal span of 330 forward + backward
# 7.80 -> 3.60 ms, the head's logsumexp of a 341 x 49,152 block 15.7 -> 4.1 ms) and Zen 5 (family 26;
# an EPYC, docs/bench/amd/: the decode 6.54 -> 1.49 s, the span 7.42 -> 1.90 ms, the logsumexp
# 13.4 -> 2.3 ms). Zen 4's other models (desktop and mobile, 0x60-0x7F; Bergamo and Siena, 0xA0-0xAF)
# and later families were not measured.
MEASURED_AMD = ((25, 0x10, 0x1F, "Zen 4", KERNELS), (26, 0x00, 0xFF, "Zen 5", KERNELS))


def measured_cpu(kernel: str = "decode") -> str | None:
    """None where "auto" may take the AVX-512 form of `kernel` (one of KERNELS) on this CPU (the
    measured ones above); otherwise why not. Cheap: nothing is built."""
    rows = _rows_of(MEASURED_AMD, kernel)  # checks `kernel` first, on Intel too
    if vendor() == "GenuineIntel":
        return None
    return measured_amd(rows, f"the {kernel} kernel")


# the CPUs "auto" takes the AVX2 kernels on (csrc/avx2/, for CPUs without AVX-512), where each was
# measured against the library path, as above: Zen 2 (family 23 from model 0x30; an EPYC of model
# 49, docs/bench/zen2/: the decode) and the EPYCs of Zen 3 (family 25, models 0x00-0x0F; one of
# model 1, docs/bench/zen3/: the decode, the spans and the head's softmax). Zen 1 (family 23 below
# 0x30), the other Zen 3 models and Intel CPUs without AVX-512 were not measured.
MEASURED_AVX2_AMD = ((23, 0x30, 0xFF, "Zen 2", ("decode",)), (25, 0x00, 0x0F, "Zen 3", KERNELS))


def measured_avx2_cpu(kernel: str = "decode") -> str | None:
    """None where "auto" may take the AVX2 form of `kernel` (one of KERNELS) on this CPU (the
    measured ones above); otherwise why not. Cheap: nothing is built."""
    return measured_amd(_rows_of(MEASURED_AVX2_AMD, kernel), f"the AVX2 form of the {kernel} kernel")


def measured_amd(rows, what: str) -> str | None:
    """None where this CPU is an AMD one of `rows` (family, first model, last model, generation);
    otherwise why not, naming `what` and where it was measured."""
    name, family, model = vendor(), _cpuinfo("cpu family"), _cpuinfo("model")
    if name == "AuthenticAMD" and family.isdigit() and model.isdigit():
        if any(int(family) == f and first <= int(model) <= last for f, first, last, _ in rows):
            return None
    measured = " and ".join(f"{gen} (family {f}, models {first} to {last})" for f, first, last, gen in rows)
    return f"{what}: measured on AMD's {measured} only, this one is {name or 'unknown'} family {family or 'unknown'} model {model or 'unknown'}"


def _rows_of(table, kernel: str) -> list:
    """The (family, first model, last model, generation) of `table`'s rows that measured `kernel`."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r}; choose from {list(KERNELS)}")
    return [row[:4] for row in table if kernel in row[4]]


def cpuinfo_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's fields of a /proc/cpuinfo text, name -> value ("model" and "model
    name" are two fields)."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's fields only
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpuinfo(field: str) -> str:
    """The first processor's `field` value in /proc/cpuinfo ("" where there is none)."""
    try:
        return cpuinfo_fields(Path("/proc/cpuinfo").read_text()).get(field, "")
    except OSError:
        return ""


@functools.cache
def _load() -> str | None:
    if hasattr(torch.ops, "hybridpo_panel") and hasattr(torch.ops.hybridpo_panel, "span_attention"):
        return None
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return f"no AVX-512 on this CPU (torch reports {torch.backends.cpu.get_cpu_capability()})"
    return _built_and_loaded("hybridpo_kernels", sorted(CSRC.glob("*.cpp")), sorted(CSRC.glob("*.[ch]*")))


def load_avx2() -> str | None:
    """None when the AVX2 kernels (csrc/avx2/, torch.ops.hybridpo_panel_avx2: the decode's few-row
    products, the fused block, the span attention and the head's softmax, for CPUs without AVX-512)
    are built and loaded here; otherwise why not."""
    return _load_avx2()


@functools.cache
def _load_avx2() -> str | None:
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"no AVX2 on this CPU (torch reports {torch.backends.cpu.get_cpu_capability()})"
    sources = sorted((CSRC / "avx2").glob("*.cpp"))
    headers = [*sorted((CSRC / "avx2").glob("*.h")), *sorted(CSRC.glob("*.h"))]  # its own, and csrc/'s it shares
    return _built_and_loaded("hybridpo_avx2", sources, [*sources, *headers])


def load_either() -> str | None:
    """None where the AVX-512 library loads or, where it does not, the AVX2 one (the kernels with a
    form in each: the span attention, the head's softmax); otherwise both reasons."""
    why = load()
    if why is None or load_avx2() is None:
        return None
    return f"{why}; {load_avx2()}"


def either_ops():
    """The ops of the library load_either found: torch.ops.hybridpo_panel (AVX-512) where it loads,
    else torch.ops.hybridpo_panel_avx2; an error where neither does."""
    why = load_either()
    if why is not None:
        raise RuntimeError(f"our kernels are unavailable here: {why}")
    return torch.ops.hybridpo_panel if load() is None else torch.ops.hybridpo_panel_avx2


def compile_flags() -> list[str]:
    """The C++ compiler's flags for our kernels: optimised for this CPU, OpenMP (torch's threads),
    a shared library with torch's C++ ABI."""
    return ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]


def _built_and_loaded(name: str, sources: list[Path], texts: list[Path]) -> str | None:
    """Build `sources` into the library `name` (once per the `texts` they include, torch version, CPU
    and compiler) and load it; None when loaded, otherwise why not."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return "no C++ compiler on PATH (c++, or $CXX)"
    flags = compile_flags()
    key = hashlib.sha256(b"\0".join([*(p.read_bytes() for p in texts), torch.__version__.encode(), " ".join(flags).encode(),
                                     (_cpuinfo("flags") or sys.platform).encode(), compiler.encode()])).hexdigest()[:16]
    root = Path(os.environ.get("HYBRIDPO_KERNEL_DIR", Path.home() / ".cache" / "hybridpo" / "kernels"))
    library = root / f"{name}-{key}.so"
    if not library.exists():
        why = _build(compiler, flags, sources, library)
        if why is not None:
            return why
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as err:
        return f"the built kernels did not load: {err}"
    return None


def _build(compiler: str, flags: list[str], sources: list[Path], library: Path) -> str | None:
    from torch.utils import cpp_extension

    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".so", dir=library.parent)
        os.close(fd)
    except OSError as err:
        return f"no folder to build the kernels in ({library.parent}): {err}"
    includes = [f"-I{p}" for p in [CSRC, *cpp_extension.include_paths()]]
    libs = [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu", "-ltorch"]
    command = [compiler, *flags, *includes, *map(str, sources), "-o", partial, *libs]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            first = next((line for line in lines if "error" in line), lines[-1] if lines else f"exit status {done.returncode}")
            return f"the kernels did not compile ({compiler}): {first.strip()}"
        os.replace(partial, library)  # atomic: another process either sees the whole library or none
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the kernels did not compile ({compiler}): {err}"
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return None
