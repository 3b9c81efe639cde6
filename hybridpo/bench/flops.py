"""FLOPs the work *needs*, and this machine's measured fp32 matmul peak.

Counting convention (a lower bound any implementation could reach; padding, recomputing a shared
prompt, or scoring the LM head at positions nobody reads are waste and are not counted):

- A GPT-NeoX block of width d and MLP width f runs 4 d² + 2 d f weights (fused QKV 3d², attention
  output d², MLP 2 d f) once per token: 2 (4 d² + 2 d f) FLOPs per token forward (a multiply-add is
  2 FLOPs; biases, norms, rotary and softmax are not counted).
- Attention costs 4 d n FLOPs per token and block for a token that attends to n keys (QKᵀ and AV
  over all heads). Causal: the t-th prompt token sees t keys; the j-th token of a response sees the
  whole prompt plus j response tokens (responses to one prompt never see each other).
- The LM head (2 d V per position) runs only where a log-prob is read: one position per response
  token, and the last prompt position, which predicts the first token of every response of that
  prompt, counted once.
- Each unique token runs once per pass: a prompt shared by chosen, rejected and online samples is
  one prompt. Backward costs twice the forward (gradients for activations and for weights).
- Sampling a response of m tokens runs m - 1 one-token decode steps with a KV cache (the first token
  comes from the prompt's last position, already counted), each with the full LM head, since the
  sampler needs the whole distribution. The prompt pass is counted once for sampling and loss
  together: the weights do not change in between, so one pass can serve both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    layers: int  # transformer blocks
    hidden: int  # width d
    intermediate: int  # MLP width f
    vocab: int  # LM-head rows V

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size)

    @property
    def token_flops(self) -> int:
        """Forward FLOPs of the blocks' weight matmuls for one token (no attention, no head)."""
        d, f = self.hidden, self.intermediate
        return self.layers * 2 * (4 * d * d + 2 * d * f)

    @property
    def head_flops(self) -> int:
        """Forward FLOPs of the LM head at one position."""
        return 2 * self.hidden * self.vocab


def attention_keys(prompt_len: int, response_lens: list[int]) -> int:
    """Sum over the tokens of a prompt and its responses of the keys each attends to (causal)."""
    p = prompt_len
    keys = p * (p + 1) // 2
    for n in response_lens:
        keys += n * p + n * (n + 1) // 2
    return keys


def forward_flops(shape: ModelShape, prompt_len: int, response_lens: list[int]) -> int:
    """One forward over a prompt and its responses, each unique token once, head at scored positions."""
    tokens = prompt_len + sum(response_lens)
    scored = sum(response_lens)
    if response_lens:
        scored -= len(response_lens) - 1  # the last prompt position is shared by every response
    attention = 4 * shape.hidden * shape.layers * attention_keys(prompt_len, response_lens)
    return tokens * shape.token_flops + attention + scored * shape.head_flops


def decode_flops(shape: ModelShape, prompt_len: int, sample_lens: list[int]) -> int:
    """Sampling with a KV cache: m - 1 one-token steps per sample of m tokens, full head each.

    The prompt pass and the first token's head are not counted here (see the module docstring).
    """
    total = 0
    for m in sample_lens:
        for j in range(1, m):  # feeding sample token j; it attends to the prompt and j tokens
            total += shape.token_flops + 4 * shape.hidden * shape.layers * (prompt_len + j) + shape.head_flops
    return total


def dpo_step_flops(shape: ModelShape, groups: list[tuple[int, list[int]]]) -> int:
    """DPO: policy forward + backward (3x) and reference forward (1x) over each (prompt, responses)."""
    return sum(4 * forward_flops(shape, p, lens) for p, lens in groups)


def online_step_flops(
    shape: ModelShape, groups: list[tuple[int, list[int]]], samples: list[list[int]]
) -> int:
    """HyPO / RLOO: sample, then policy forward + backward and reference forward over all responses.

    `groups[i]` holds prompt i's length and the lengths of all its scored responses (offline pair
    and online samples); `samples[i]` the lengths of the online samples alone (for the decode cost).
    """
    total = dpo_step_flops(shape, groups)
    for (p, _), lens in zip(groups, samples, strict=True):
        total += decode_flops(shape, p, lens)
    return total


def matmul_peak(threads: int, sizes: tuple[tuple[int, int, int], ...] = ((2048, 2048, 2048), (4096, 512, 2048)),
                seconds: float = 1.0) -> float:
    """Best fp32 matmul FLOP/s of this machine on `threads` threads, over a few GEMM shapes.

    Each (m, k, n) shape is warmed up, then repeated for about `seconds`; the best shape counts.
    """
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for m, k, n in sizes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        torch.mm(a, b, out=out)  # warm-up
        runs, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, 2.0 * m * k * n * runs / elapsed)
    return best
