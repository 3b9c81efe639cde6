"""Experiments: multi-stage pipelines over the one training loop and the evaluation module, each
with a typed config (`common`), driven by `hybridpo experiment NAME`:

    gold   the gold-reward task on a random model: every number exact (configs/gold/)
    chat   SmolLM2-135M-Instruct on UltraFeedback: reward model, DPO, HyPO (`make demo`)
"""
