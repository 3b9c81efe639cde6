"""FLOPs the work *needs*, and this machine's measured fp32 matmul peak.

Counting convention (a lower bound any implementation could reach; padding, recomputing a shared
prompt, or scoring the LM head at positions nobody reads are waste and are not counted):

- A block of width d, query width d_q (heads x head_dim), key / value width d_kv (kv_heads x
  head_dim: grouped-query attention when < d_q) and MLP width f runs the weights of its projections
  once per token: q d d_q, k and v d d_kv each, the attention output d_q d, and an MLP of 2 d f
  (GPT-NeoX: up, down) or 3 d f (Llama, Qwen2, Mistral: gate, up, down). A GPT-NeoX block is
  4 d² + 2 d f; SmolLM2-135M's (d 576, d_kv 192, f 1536) 3.54 M weights. 2 FLOPs per weight and
  token forward (a multiply-add is 2 FLOPs; biases, norms, rotary and softmax are not counted).
- Attention costs 4 d_q n FLOPs per token and block for a token that attends to n keys (QKᵀ and AV
  over all query heads). Causal: the t-th prompt token sees t keys; the j-th token of a response sees the
  whole prompt plus j response tokens (responses to one prompt never see each other).
- The LM head (2 d V per position) runs only where a log-prob is read: one position per response
  token, and the last prompt position, which predicts the first token of every response of that
  prompt, counted once.
- Each unique token runs once per pass: a prompt shared by chosen, rejected and online samples is
  one prompt. Backward costs twice the forward (gradients for activations and for weights).
- Training only the last n of L blocks (a frozen trunk, `trained_layers=n`): the policy's forward
  runs every block, its backward only the last n (gradients for their activations and weights)
  and the head's activation gradient (the head is frozen); the frozen-trunk reference reuses the
  trunk's states, so it runs the last n blocks and the head.
- Sampling a response of m tokens runs m - 1 one-token decode steps with a KV cache (the first token
  comes from the prompt's last position, already counted), each with the full LM head, since the
  sampler needs the whole distribution. The prompt pass is counted once for sampling and loss
  together: the weights do not change in between, so one pass can serve both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


UNGATED_MLP = ("gpt_neox", "gpt2", "gptj", "opt")  # model types whose MLP is up + down (no gate)


@dataclass(frozen=True)
class ModelShape:
    layers: int  # transformer blocks
    hidden: int  # width d
    intermediate: int  # MLP width f
    vocab: int  # LM-head rows V
    kv_hidden: int = 0  # key / value width d_kv = kv_heads x head_dim; 0 = d (no grouped-query attention)
    gated: bool = False  # MLP of 3 d f (gate, up, down: Llama family) instead of 2 d f (GPT-NeoX)

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if heads * head_dim != config.hidden_size:
            raise ValueError(f"query width {heads} x {head_dim} != hidden {config.hidden_size}: not counted here")
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size,
                   kv_hidden=kv_heads * head_dim, gated=config.model_type not in UNGATED_MLP)

    @property
    def block_weights(self) -> int:
        """Weights of one block's projections: q, k, v, attention output, MLP."""
        d, f, kv = self.hidden, self.intermediate, self.kv_hidden or self.hidden
        return 2 * d * d + 2 * d * kv + (3 if self.gated else 2) * d * f

    @property
    def token_flops(self) -> int:
        """Forward FLOPs of the blocks' weight matmuls for one token (no attention, no head)."""
        return self.layers * 2 * self.block_weights

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
    return body_flops(shape, prompt_len, response_lens) + head_flops(shape, response_lens)


def body_flops(shape: ModelShape, prompt_len: int, response_lens: list[int]) -> int:
    """The blocks' part of `forward_flops` (every block; a share n / L of it for n blocks)."""
    tokens = prompt_len + sum(response_lens)
    return tokens * shape.token_flops + 4 * shape.hidden * shape.layers * attention_keys(prompt_len, response_lens)


def head_flops(shape: ModelShape, response_lens: list[int]) -> int:
    """The LM head's part of `forward_flops`: at the scored positions only."""
    scored = sum(response_lens)
    if response_lens:
        scored -= len(response_lens) - 1  # the last prompt position is shared by every response
    return scored * shape.head_flops


def decode_flops(shape: ModelShape, prompt_len: int, sample_lens: list[int]) -> int:
    """Sampling with a KV cache: m - 1 one-token steps per sample of m tokens, full head each.

    The prompt pass and the first token's head are not counted here (see the module docstring).
    """
    total = 0
    for m in sample_lens:
        for j in range(1, m):  # feeding sample token j; it attends to the prompt and j tokens
            total += shape.token_flops + 4 * shape.hidden * shape.layers * (prompt_len + j) + shape.head_flops
    return total


def dpo_step_flops(shape: ModelShape, groups: list[tuple[int, list[int]]], trained_layers: int | None = None) -> int:
    """DPO: policy forward + backward (3x) and reference forward (1x) over each (prompt, responses);
    with `trained_layers` n, the frozen-trunk count of the module docstring:
    forward + 3 x (n / L of the blocks) + 2 x head."""
    if trained_layers is None:
        return sum(4 * forward_flops(shape, p, lens) for p, lens in groups)
    share = trained_layers / shape.layers
    return sum(forward_flops(shape, p, lens) + round(3 * share * body_flops(shape, p, lens)) + 2 * head_flops(shape, lens)
               for p, lens in groups)


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
                seconds: float = 1.0, device: str = "cpu", precision: str = "fp32") -> float:
    """Best matmul FLOP/s of this machine on `threads` threads (fp32 on CPU; on a GPU, `precision`
    "bf16" multiplies bf16 matrices, at 8192³), over a few GEMM shapes and, for fp32 on the CPU,
    both libraries torch ships: its own product (MKL) and oneDNN's (hybridpo.fast.onednn_gemm; on
    an AMD EPYC MKL reached 177 GFLOP/s and oneDNN ~400, docs/bench/amd/matmul_paths.md), so a
    FLOP share is read against the fastest product this machine offers.

    Each (m, k, n) shape is warmed up, then repeated for about `seconds`; the best shape counts.
    """
    import torch

    from hybridpo.fast import onednn_gemm

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if device != "cpu":
        sizes = ((8192, 8192, 8192),)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    products = [lambda a, b, out: torch.mm(a, b, out=out)]
    if device == "cpu" and dtype == torch.float32 and onednn_gemm.unsupported_reason() is None:
        products.append(lambda a, b, out: onednn_gemm.mm(a, b, onednn=True))
    best = 0.0
    for m, k, n in sizes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)
        for product in products:
            product(a, b, out)  # warm-up
            sync()
            runs, start = 0, time.perf_counter()
            while True:
                product(a, b, out)
                runs += 1
                sync()
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            best = max(best, 2.0 * m * k * n * runs / elapsed)
    return best
