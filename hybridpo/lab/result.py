"""What an experiment returns: settings, the series behind its figure, and named claims.

A claim is a measured number compared with a threshold (`value OP threshold`); `holds` is computed
here, never typed in by hand, so a claim cannot say more than its number shows.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The comparisons a claim may use, by the symbol written into result.json.
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


@dataclass
class Claim:
    name: str  # short identifier, stable across runs (tests look claims up by it)
    statement: str  # the claim in words, e.g. "RLHF keeps π(y3) = 0"
    value: float  # the measured number
    op: str  # how value is compared with threshold: one of <, <=, >, >=, ==
    threshold: float  # the bound the measurement must satisfy
    note: str = ""  # where this differs from the paper's text, and why
    holds: bool = field(init=False)  # value OP threshold, computed

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"claim {self.name!r}: op={self.op!r}; choose from {sorted(_OPS)}")
        self.value = float(self.value)
        self.threshold = float(self.threshold)
        self.holds = bool(_OPS[self.op](self.value, self.threshold))


@dataclass
class LabResult:
    name: str  # experiment name, e.g. "partial-coverage"
    section: str  # where the claim comes from in the paper / lecture
    seed: int  # the seed every random draw of the run derives from
    settings: dict[str, Any]  # every parameter of the run, including the methods' choices
    series: dict[str, Any]  # the numbers behind the figure (lists of floats, keyed by curve)
    claims: list[Claim]  # the named claims, each with value, threshold and holds

    def claim(self, name: str) -> Claim:
        for c in self.claims:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}: no claim {name!r}; have {[c.name for c in self.claims]}")

    @property
    def all_hold(self) -> bool:
        return all(c.holds for c in self.claims)

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), indent=1)

    def write(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
