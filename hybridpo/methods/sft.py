"""Supervised fine-tuning: mean negative log-likelihood of the reference response tokens.

The prompt is context only (its tokens are not scored); the response ends with EOS, so the model
also learns to stop. The mean is over all response tokens of the micro-batch (long and short
responses weigh per token, as in standard SFT).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridpo.data.examples import PromptExample
from hybridpo.methods.base import Method, MethodArgs, MethodContext


@dataclass
class SFTConfig(MethodArgs):
    pass  # SFT has no options of its own: learning rate, batch etc. live in `optim`


class SFT(Method):
    name = "sft"
    Config = SFTConfig
    data_kind = "prompts"

    def loss(self, batch: list[PromptExample], ctx: MethodContext):
        for ex in batch:
            if ex.reference_ids is None:
                raise ValueError("method=sft needs SFT rows (prompt + response); got a prompt-only example")
        out = ctx.policy.logps([ex.prompt_ids for ex in batch], [[ex.reference_ids] for ex in batch])
        n_tokens = out.mask.sum()
        nll = -out.tok_logps.sum() / n_tokens  # mean over response tokens; tok_logps is 0 off the mask
        metrics = {
            "loss": nll.item(),
            "logps": out.logps.mean().item(),  # mean sequence log-prob of the targets
            "response_length": out.lengths.float().mean().item(),
        }
        return nll, metrics
