"""Training methods, one short file each; `METHODS` maps the config's `method:` name to a class.

Adding a method: write hybridpo/methods/<name>.py with a `Method` subclass and add one line here.
"""

from __future__ import annotations

from hybridpo.methods.base import Method, MethodArgs, MethodContext
from hybridpo.methods.dpo import DPO, IPO
from hybridpo.methods.hypo import HyPO
from hybridpo.methods.online_dpo import OnlineDPO
from hybridpo.methods.rlhf import RLHF
from hybridpo.methods.rm import RewardModel
from hybridpo.methods.sft import SFT

METHODS: dict[str, type[Method]] = {
    "sft": SFT,
    "rm": RewardModel,
    "dpo": DPO,
    "ipo": IPO,
    "hypo": HyPO,
    "online_dpo": OnlineDPO,
    "rlhf": RLHF,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method={name!r}; choose from {sorted(METHODS)}") from None


__all__ = ["METHODS", "Method", "MethodArgs", "MethodContext", "get_method"]
