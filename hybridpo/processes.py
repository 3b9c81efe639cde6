"""Reductions over the processes of an `accelerate launch` (identity in one process).

The loop steps every process on the same numbers: gradients averaged by hand (hybridpo runs its
own backward, outside accelerate's wrapped model), the logged row averaged, token and example
counts summed. float64 throughout, so sums over many steps and processes stay exact.
"""

from __future__ import annotations

import torch


def all_reduce_grads(params, accelerator) -> None:
    """Every parameter's gradient replaced by its mean over the processes (a missing one counts as 0)."""
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))


def sum_across(value: float, accelerator) -> float:
    """A number summed over the processes."""
    if accelerator.num_processes == 1:
        return value
    value = torch.tensor(float(value), dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(value, reduction="sum"))


def reduce_across(row: dict, accelerator, reduction: str) -> dict:
    """Each value of `row` reduced ("mean" or "sum") over the processes."""
    if accelerator.num_processes == 1 or not row:
        return row
    keys = sorted(row)
    values = torch.tensor([row[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    return dict(zip(keys, accelerator.reduce(values, reduction=reduction).tolist()))
