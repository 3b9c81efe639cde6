"""Every module of the package imports cleanly and does nothing on import (STYLE habit 8)."""

import importlib
import pkgutil

import hybridpo


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(hybridpo.__path__, prefix="hybridpo.")]
    assert "hybridpo.losses" in names
    for name in names:
        importlib.import_module(name)
