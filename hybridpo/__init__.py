"""hybridpo: preference fine-tuning with cheap online data (DPO, IPO, RLHF, online DPO, HyPO).

Importing the package does nothing beyond defining names; see `hybridpo.cli` for the entry point.
"""

__version__ = "0.1.0"
