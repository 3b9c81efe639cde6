"""The AVX2 panel product (hybridpo/fast/csrc/avx2/panel_avx2.cpp) as it is in the working tree
against its source at an earlier revision (`--before`), both built here and alternated in one
process on SmolLM2-135M-Instruct's product shapes.

Why: at 219f192 the kernel held its 12 accumulators in an array of __m256, which GCC 12 kept on the
stack, storing all 12 on every input k; the working tree's names each accumulator. Each round
times each form's product for every shape and row count (best of a few calls of at least 0.1 s of
work); the table gives the median over `--repeats` rounds. The outputs are checked against x Wᵀ.

    .venv/bin/python docs/bench/avx2_accumulators.py --before 219f192 --repeats 5 > docs/bench/zen3/avx2_accumulators.md
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

import paired
from hybridpo.bench.record import machine
from hybridpo.fast import kernels

SOURCE = "hybridpo/fast/csrc/avx2/panel_avx2.cpp"
SHAPES = {"q, k, v": (960, 576), "o": (576, 576), "gate, up": (3072, 576), "down": (576, 1536),
          "head (tied)": (49152, 576)}
ROWS = (16, 12, 8, 4)


def build_before(revision: str, folder: Path):
    """The ops of SOURCE at `revision`, built as the library hybridpo_panel_before."""
    text = subprocess.run(["git", "show", f"{revision}:{SOURCE}"], capture_output=True, text=True, check=True).stdout
    listed = subprocess.run(["git", "ls-tree", "--name-only", revision, f"{Path(SOURCE).parent}/"], capture_output=True,
                            text=True, check=True).stdout.split()
    for header in (name for name in listed if name.endswith(".h")):  # its own headers (tile.h), as they were then
        shown = subprocess.run(["git", "show", f"{revision}:{header}"], capture_output=True, text=True, check=True)
        (folder / Path(header).name).write_text(shown.stdout)
    source = folder / "panel_avx2_before.cpp"
    source.write_text(text.replace("TORCH_LIBRARY(hybridpo_panel_avx2", "TORCH_LIBRARY(hybridpo_panel_before"))
    library = folder / "before.so"
    why = kernels._build(shutil.which(os.environ.get("CXX", "c++")), kernels.compile_flags(), [source], library)
    if why is not None:
        raise SystemExit(why)
    torch.ops.load_library(str(library))
    return torch.ops.hybridpo_panel_before


def timed(op, x, panels) -> float:
    """Seconds a call: the best of 3 runs of enough calls for ~1e8 weights read."""
    reps = max(3, int(1e8 // panels.numel()))
    return paired.best(lambda: [op.linear(x, panels, None, None) for _ in range(reps)], 3) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="219f192", help="the revision whose kernel to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    why = kernels.load_avx2()
    if why is not None:
        raise SystemExit(f"the AVX2 kernel does not load here: {why}")
    with tempfile.TemporaryDirectory() as folder:
        forms = {args.before: build_before(args.before, Path(folder)), "working tree": torch.ops.hybridpo_panel_avx2}
        generator = torch.Generator().manual_seed(0)
        weights = {name: torch.randn(*shape, generator=generator) for name, shape in SHAPES.items()}
        panels = {name: forms["working tree"].pack(w, w.new_empty((w.shape[0] // 16, w.shape[1], 16)))
                  for name, w in weights.items()}
        inputs = {(name, m): torch.randn(m, weights[name].shape[1], generator=generator) for name in SHAPES for m in ROWS}
        worst = 0.0
        for (name, m), x in inputs.items():
            want = x.double() @ weights[name].double().T
            for op in forms.values():
                got = op.linear(x, panels[name], None, None).double()
                worst = max(worst, float((got - want).abs().max() / want.abs().max()))
        times = {(form, name, m): [] for form in forms for name in SHAPES for m in ROWS}
        for _ in range(args.repeats):
            for (name, m), x in inputs.items():
                for form, op in forms.items():
                    times[form, name, m].append(timed(op, x, panels[name]))
    print(f"Machine: {machine()}; torch threads 2; fp32; {args.repeats} alternated rounds, the median of each.\n")
    print(f"Both forms' outputs agree with x Wᵀ (in float64) to {worst:.1e} of each product's largest.\n")
    print(f"| product (N x K) | rows | {args.before} | working tree | speed-up | working tree GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (n, k) in SHAPES.items():
        for m in ROWS:
            before, now = (statistics.median(times[f, name, m]) for f in forms)
            print(f"| {name} ({n} x {k}) | {m} | {before * 1e3:.3f} ms | {now * 1e3:.3f} ms | {before / now:.2f}x | "
                  f"{2 * m * n * k / now / 1e9:.0f} |")


if __name__ == "__main__":
    main()
