"""The lean decode step of hybridpo.fast.neox_decode for the Llama family (Llama, Qwen2, Mistral
without a sliding window): the same decode loop (`neox_decode.decode`), a Llama block per layer.

Why (measured on SmolLM2-135M-Instruct, one thread, CPU time): transformers' decode step with 16
samples of UltraFeedback prompts took 137 ms, 7.1 s of a 53-token decode, where the step's
weights (0.54 GB) stream in ~40 ms. As for GPT-NeoX: each weight is MKL-packed once per `sample`
call for the grid's row count; each prompt's cache is read once for its k samples; and the
block is ~12 kernels:

- each RMSNorm's scale γ folded into the linears that read it (x̂γ Wᵀ = x̂ (W diag γ)ᵀ), so a norm
  is one `rms_norm` without weight; q | k | v one matmul, gate | up one matmul;
- the attention scale 1/sqrt(D) folded into the query rows; rotary's rotate_half pairs (i, i + R/2)
  reordered next to each other, so rotary is one in-place complex multiply on q and k (the
  prompt's cached keys are reordered on entry; q·k is unchanged);
- grouped-query attention reads the KV heads as they are (SDPA's enable_gqa), no repeat.

The final norm keeps its γ (the head is tied to the embedding in SmolLM2 / Qwen2: folding would
copy it). Tests check this step draws the tokens transformers' forward draws
(tests/fast/test_llama_decode.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridpo.fast.neox_decode import PackedLinear, rotary_order

MODEL_TYPES = ("llama", "qwen2", "mistral")


def unsupported_reason(model) -> str | None:
    """None when `model` can decode here; otherwise why not (the sampler then uses transformers)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in MODEL_TYPES:
        return f"{type(model).__name__} is not a Llama-family causal LM ({', '.join(MODEL_TYPES)})"
    if getattr(config, "sliding_window", None) is not None and config.model_type == "mistral":
        return "sliding-window attention"
    if getattr(config, "layer_types", None) and any(t != "full_attention" for t in config.layer_types):
        return "layers other than full attention"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act={getattr(config, 'hidden_act', None)!r}, not silu"
    trunk = getattr(model, "model", None)
    if trunk is None or not hasattr(trunk, "rotary_emb") or not hasattr(trunk, "layers"):
        return f"{type(model).__name__} lacks the Llama trunk (model.layers, model.rotary_emb)"
    for layer in trunk.layers:
        a, m = layer.self_attn, layer.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
            if type(lin) is not torch.nn.Linear:  # e.g. a peft LoRA layer or a quantised linear
                return f"layer {type(lin).__name__} is not a plain nn.Linear"
    if type(model.get_output_embeddings()) is not torch.nn.Linear:
        return "the head is not a plain nn.Linear"
    return None


def norm_eps(norm) -> float:
    """An RMSNorm module's ε (transformers names it variance_epsilon or eps)."""
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def _rms(norm):
    eps = norm_eps(norm)
    return lambda x: F.rms_norm(x, (x.shape[-1],), None, eps)


def _bias(linear: torch.nn.Linear, rows: int) -> Tensor:
    return linear.bias.detach() if linear.bias is not None else linear.weight.new_zeros(rows)


class LlamaDecoder:
    """The weights of a Llama-family model laid out for decoding, and one decode step; the
    interface `neox_decode.decode` drives (see NeoXDecoder). `linear(weight, bias, rows)` makes
    each product (neox_decode.PackedLinear, or hybridpo.fast.panel_linear.PanelLinear)."""

    def __init__(self, model, rows: int, linear=None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"LlamaDecoder: {reason}")
        linear = linear or PackedLinear
        trunk, cfg = model.model, model.config
        self.heads = H = cfg.num_attention_heads
        self.kv_heads = KV = getattr(cfg, "num_key_value_heads", None) or H
        self.head_dim = D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
        self.embed = trunk.embed_tokens.weight.detach()
        self.rotary = trunk.rotary_emb
        self.final_eps, self.final_gamma = eps, gamma = norm_eps(trunk.norm), trunk.norm.weight.detach()
        self.final_norm = lambda x: F.rms_norm(x, (x.shape[-1],), gamma, eps)
        self.head = linear(model.get_output_embeddings().weight.detach(), None, rows, copy=False)
        self.rotary_dims = R = self.rotary(self.embed[:1], torch.zeros(1, 1, dtype=torch.long))[0].shape[-1]
        self.key_order = order = rotary_order(D, R)  # (D,) reordered head dims
        q_rows = (torch.arange(H)[:, None] * D + order).reshape(-1)
        k_rows = (torch.arange(KV)[:, None] * D + order).reshape(-1)
        self.layers = []
        self.eps = [(norm_eps(b.input_layernorm), norm_eps(b.post_attention_layernorm)) for b in trunk.layers]
        for layer in trunk.layers:
            a, m = layer.self_attn, layer.mlp
            g1 = layer.input_layernorm.weight.detach()
            g2 = layer.post_attention_layernorm.weight.detach()
            wq = (a.q_proj.weight.detach() * g1)[q_rows] * D**-0.5
            bq = _bias(a.q_proj, H * D)[q_rows] * D**-0.5
            wk, bk = (a.k_proj.weight.detach() * g1)[k_rows], _bias(a.k_proj, KV * D)[k_rows]
            wv, bv = a.v_proj.weight.detach() * g1, _bias(a.v_proj, KV * D)
            has_bias = any(p.bias is not None for p in (a.q_proj, a.k_proj, a.v_proj))
            qkv = linear(torch.cat([wq, wk, wv]).contiguous(), torch.cat([bq, bk, bv]) if has_bias else None, rows)
            up = linear(torch.cat([m.gate_proj.weight.detach() * g2, m.up_proj.weight.detach() * g2]).contiguous(),
                         torch.cat([_bias(m.gate_proj, m.gate_proj.out_features), _bias(m.up_proj, m.up_proj.out_features)])
                         if m.gate_proj.bias is not None or m.up_proj.bias is not None else None, rows)
            o = linear(a.o_proj.weight.detach(), None if a.o_proj.bias is None else a.o_proj.bias.detach(), rows)
            down = linear(m.down_proj.weight.detach(), None if m.down_proj.bias is None else m.down_proj.bias.detach(), rows)
            self.layers.append((_rms(layer.input_layernorm), _rms(layer.post_attention_layernorm), qkv, o, up, down,
                                m.gate_proj.out_features))

    def repack(self, rows: int) -> None:
        for linear in self._linears():
            linear.pack(rows)

    def _linears(self):
        yield self.head
        for _, _, qkv, o, up, down, _ in self.layers:
            yield from (qkv, o, up, down)

    def rotary_tables(self, positions: Tensor) -> Tensor:
        """The rotation e^{iθ} (n, R/2) complex of each position (n,) and pair of rotary dims."""
        cos, sin = self.rotary(self.embed[:1], positions[None])  # (1, n, R), halves equal (rotate_half)
        half = self.rotary_dims // 2
        return torch.complex(cos[0, :, :half].float(), sin[0, :, :half].float())

    def prompt_keys(self, keys: Tensor) -> Tensor:
        """Prefilled keys (..., D) in the decoder's reordered head dims."""
        return keys[..., self.key_order]

    def step(self, tok: Tensor, positions: Tensor, caches: list[Tensor], bias: Tensor, width: int,
             rotations: Tensor) -> Tensor:
        """Feed one token per sample; return the next-token logits (P, k, V). The arguments are
        NeoXDecoder.step's; caches are (P, KV, C, 2D)."""
        P, k = tok.shape
        H, KV, D, R = self.heads, self.kv_heads, self.head_dim, self.rotary_dims
        x = self.embed[tok.reshape(-1)]  # (P*k, d)
        rotation = rotations[positions].view(P, 1, 1, R // 2)  # broadcast over k and heads
        mask = bias[..., :width]
        gqa = H != KV
        for (norm1, norm2, qkv_in, o, up, down, f), cache in zip(self.layers, caches):
            fused = qkv_in(norm1(x))  # (P*k, (H + 2 KV) D)
            q = fused[:, : H * D].view(P, k, H, D)
            kv = fused[:, H * D :].view(P, k, 2, KV, D)
            torch.view_as_complex(q[..., :R].unflatten(-1, (R // 2, 2))).mul_(rotation)  # rotary, in place
            torch.view_as_complex(kv[:, :, 0, :, :R].unflatten(-1, (R // 2, 2))).mul_(rotation)
            cache[:, :, width - k : width].view(P, KV, k, 2, D).copy_(kv.permute(0, 3, 1, 2, 4))
            keys, values = cache[:, :, :width, :D], cache[:, :, :width, D:]  # (P, KV, width, D) views
            attn = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask, scale=1.0,
                                                  enable_gqa=gqa)  # (P, H, k, D)
            x = o(attn.transpose(1, 2).reshape(P * k, H * D), residual=x)
            gu = up(norm2(x))  # (P*k, 2f) gate | up
            x = down(F.silu(gu[:, :f]).mul_(gu[:, f:]), residual=x)
        return self.head(self.final_norm(x)).view(P, k, -1)
