"""Matplotlib set-up for the lab's figures: the Agg backend is chosen here, when a figure is
drawn, never at import (importing the lab must not touch a plotting backend)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    pyplot().close(fig)
