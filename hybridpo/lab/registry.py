"""The lab's experiments by name, and the one function that writes an experiment's files."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from hybridpo.lab.result import LabResult

# name -> module under hybridpo.lab; the order is the order of `lab list` and `lab all`.
EXPERIMENTS: dict[str, str] = {
    "partial-coverage": "partial_coverage",
    "extrapolation-linear": "extrapolation_linear",
    "extrapolation-tabular": "extrapolation_tabular",
    "example-6-1": "example_6_1",
    "isomorphic-equivalence": "isomorphic_equivalence",
    "fkl-vs-rkl": "fkl_vs_rkl",
    "coverage-bounds": "coverage_bounds",
    "hypo-vs-dpo": "hypo_vs_dpo",
}


def experiment(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise ValueError(f"lab experiment {name!r}; choose from {list(EXPERIMENTS)}")
    return importlib.import_module(f"hybridpo.lab.{EXPERIMENTS[name]}")


def run_and_write(name: str, out: Path, seed: int = 0) -> LabResult:
    """Run one experiment and write out/NAME/result.json and out/NAME/figure.png."""
    module = experiment(name)
    result = module.run(seed=seed)
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    result.write(folder / "result.json")
    module.plot(result, folder / "figure.png")
    return result
