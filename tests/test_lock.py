"""`make test` tests what the lock says: in the repository's own .venv (the one `make` builds),
every package of requirements/lock.txt is installed at its locked version."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, pin = line.partition("==")
            pins[name] = pin
    return pins


def test_the_lock_pins_every_dependency_exactly():
    pins = locked()
    assert {"torch", "transformers", "peft", "accelerate", "datasets", "gguf"} <= set(pins)
    assert all(pin and "+" not in pin for pin in pins.values())  # exact, and torch without its local +cpu
    assert pins["torch"] == "2.13.0"  # the pin pyproject.toml and the Makefile install first


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="checks the environment `make test` builds (.venv of this repository)")
def test_the_make_environment_has_the_locked_versions():
    wrong = {}
    for name, pin in locked().items():
        try:
            have = version(name).split("+")[0]
        except PackageNotFoundError:
            have = None
        if have != pin:
            wrong[name] = (have, pin)
    assert not wrong, f"installed vs locked: {wrong}; run `make test` on a fresh clone or `make lock`"
