"""A lean decode step for GPT-NeoX (Pythia) models: the sampler's inner loop without transformers'
per-layer Python, and with each prompt's keys / values read once for all k of its samples.

Why (measured on 2 CPU threads, at the tldr benchmark workload's shape, hybridpo.bench.workloads):
a decode step feeds one token per sample, so every matmul has a handful of rows and the step is
bound by per-product and per-op overhead, not by FLOPs. transformers' step for a Pythia-70m-shaped
model with 16 samples of ~330-token TL;DR prompts took 45 ms. Three wastes, three changes:

- An unpacked MKL product re-lays its weight out into GEMM panels at every call: the 16-row
  products of that step ran at ~10 GB/s of weights against the 44 GB/s the machine reads.
  Here each weight is packed once per `sample` call for the grid's row count (`PackedLinear`).
- The k samples of a prompt attend to the same prompt keys / values. transformers repeats the
  prompt's cache k times and reads every copy at every step; here the prompt part of attention is
  one (k x D) @ (D x W) product per prompt and head, so the prompt cache is read once per step.
  Softmax runs over the prompt and the sample's own keys together, so this is exact attention,
  not an approximation (Hydragen-style prefix sharing).
- Masks, rotary tables and cache bookkeeping are built once per step, not once per layer; layer
  norms' affine parts, the attention scale and rotary's pairing are folded into the weights
  (`NeoXDecoder`), so a layer is ~10 kernels.

The samples sit on a (prompts, k) grid. A sample that has ended keeps its slot (its rows are
computed and ignored); once the prompts whose samples have all ended are half the grid, they
leave it and the weights are repacked for the smaller grid (so a decode repacks at most log2(P)
times). Extra rows cost little in a step whose products have a handful of rows, and the grid
keeps the prompt part of attention a dense product.

Only plain GPT-NeoX models take this path (`unsupported_reason` says why another does not);
`hybridpo.rollout.sample` falls back to transformers' forward for everything else. Tests check
the two paths give the same tokens and log-probs (tests/rollout/test_neox_decode.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def unsupported_reason(model) -> str | None:
    """None when `model` can decode here; otherwise why not (the sampler then uses transformers)."""
    if getattr(getattr(model, "config", None), "model_type", None) != "gpt_neox":
        return f"{type(model).__name__} is not a GPT-NeoX causal LM"
    if not hasattr(model, "gpt_neox"):
        return f"{type(model).__name__} lacks the gpt_neox trunk"
    for layer in model.gpt_neox.layers:
        for lin in (layer.attention.query_key_value, layer.attention.dense, layer.mlp.dense_h_to_4h, layer.mlp.dense_4h_to_h):
            if type(lin) is not torch.nn.Linear:  # e.g. a peft LoRA layer or a quantised linear
                return f"layer {type(lin).__name__} is not a plain nn.Linear"
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return f"head {type(head).__name__} is not a plain nn.Linear"
    return None


class NeoXDecoder:
    """The weights of a GPT-NeoX model laid out for decoding, and one decode step.

    Built once per `sample` call (the weights do not change while sampling), without grad:
    - every linear a `PackedLinear`: on CPU in fp32 with MKL, its weight packed once into MKL's GEMM
      layout for the grid's row count, so a step does not repack it (in the decode loop at the
      TL;DR shape: the LM head's product 10 -> 7 ms);
      elsewhere a contiguous (in, out) copy (`torch.addmm(b, x, W)`), the fast layout for
      few-row inputs without packing;
    - each layer norm's affine γ, β folded into the linear that reads it ((x̂γ + β)Wᵀ + b =
      x̂(W diag γ)ᵀ + (Wβ + b)), so a norm is one plain normalisation; with the parallel residual
      (Pythia) both norms read the same x, so QKV and the MLP's first linear are one matmul;
    - the attention scale 1/sqrt(D) folded into the query rows (rotary embedding is linear, so
      scaling before or after it is the same), so no per-step scaling;
    - the rotary dims of q and k reordered (i, i + R/2) -> (2i, 2i + 1): rotate_half's pairs
      become adjacent, rotary is one in-place complex multiply, and q·k is unchanged because
      queries and keys are reordered alike (the prompt's cached keys are reordered on entry).
    """

    def __init__(self, model, rows: int, linear=None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"NeoXDecoder: {reason}")
        linear = linear or PackedLinear
        trunk, cfg = model.gpt_neox, model.config
        self.heads = H = cfg.num_attention_heads
        self.head_dim = D = cfg.hidden_size // cfg.num_attention_heads
        self.embed = trunk.embed_in.weight.detach()  # (V, d)
        self.rotary = trunk.rotary_emb  # called for cos / sin, so every rope type transformers knows works
        self.final_norm = _norm(trunk.final_layer_norm)
        head = model.get_output_embeddings()
        self.head = linear(head.weight.detach(), _bias(head), rows, copy=False)
        self.parallel = bool(cfg.use_parallel_residual)
        self.rotary_dims = R = self.rotary(self.embed[:1], torch.zeros(1, 1, dtype=torch.long))[0].shape[-1]
        self.key_order = rotary_order(D, R)  # (D,) the reordered key dims, for the prompt's cached keys
        qkv_rows = torch.arange(3 * D).view(3, D)
        qkv_rows[:2] = qkv_rows[:2, self.key_order]  # q and k dims reordered within each head; v kept
        order = (torch.arange(H)[:, None, None] * 3 * D + qkv_rows).reshape(-1)  # (3d,) per head q | k | v
        q_scale = torch.ones(H, 3, D)
        q_scale[:, 0] = D**-0.5  # the query part of each head's (q | k | v) block
        q_scale = q_scale.reshape(-1)
        self.layers = []
        for layer in trunk.layers:
            qkv, dense = layer.attention.query_key_value, layer.attention.dense
            fc_in, fc_out = layer.mlp.dense_h_to_4h, layer.mlp.dense_4h_to_h
            w_qkv, b_qkv = _folded(layer.input_layernorm, qkv, order, q_scale.to(qkv.weight))
            w_in, b_in = _folded(layer.post_attention_layernorm, fc_in)
            if self.parallel:  # both norms normalise the same x: one matmul gives q | k | v | mlp input
                w_qkv, b_qkv = torch.cat([w_qkv, w_in]), torch.cat([b_qkv, b_in])
            self.layers.append((
                _norm(layer.input_layernorm, affine=False), _norm(layer.post_attention_layernorm, affine=False),
                linear(w_qkv, b_qkv, rows), linear(dense.weight.detach(), None if self.parallel else _bias(dense), rows),
                None if self.parallel else linear(w_in, b_in, rows), _activation(layer.mlp.act),
                linear(fc_out.weight.detach(), _sum_bias(dense, fc_out) if self.parallel else _bias(fc_out), rows),
            ))

    def repack(self, rows: int) -> None:
        """Re-lay the packed weights out for `rows` rows (the grid shrank)."""
        for linear in self._linears():
            linear.pack(rows)

    def _linears(self):
        yield self.head
        for _, _, *linears, _, out in self.layers:
            yield from (lin for lin in linears if lin is not None)
            yield out

    def rotary_tables(self, positions: Tensor) -> Tensor:
        """The rotation e^{iθ} (n, R/2) complex of each position (n,) and pair of rotary dims."""
        cos, sin = self.rotary(self.embed[:1], positions[None])  # (1, n, R) each, halves equal (rotate_half)
        half = self.rotary_dims // 2
        return torch.complex(cos[0, :, :half], sin[0, :, :half])

    def prompt_keys(self, keys: Tensor) -> Tensor:
        """Prefilled keys (..., D) in the decoder's reordered head dims."""
        return keys[..., self.key_order]

    def step(self, tok: Tensor, positions: Tensor, caches: list[Tensor], bias: Tensor, width: int,
             rotations: Tensor) -> Tensor:
        """Feed one token per sample; return the next-token logits (P, k, V).

        tok: (P, k) long; positions: (P,) long, the position of this token (one per prompt: its
        samples are equally long, counting the ones that ended). caches: per layer (P, H, C, 2D),
        keys (reordered, `prompt_keys`) in [..., :D], values in [..., D:]; this step writes columns
        width - k .. width - 1 (sample j at width - k + j) and attends over the first `width`.
        bias (P, 1, k, C): 0 where sample j's query may look, -inf elsewhere (prompt padding, the
        other samples' tokens). rotations: `rotary_tables` of every position the decode reaches.
        """
        P, k = tok.shape
        H, D, R = self.heads, self.head_dim, self.rotary_dims
        x = self.embed[tok.reshape(-1)]  # (P*k, d)
        rotation = rotations[positions].view(P, 1, 1, 1, R // 2)  # broadcast over k, heads, q|k
        mask = bias[..., :width]
        d = H * D
        for (norm1, norm2, qkv_in, dense, fc_in, act, fc_out), cache in zip(self.layers, caches):
            fused = qkv_in(norm1(x))  # (P*k, 3d [+ MLP width]) q | k | v per head [, MLP input]
            qkv = fused[:, : 3 * d].view(P, k, H, 3, D)
            torch.view_as_complex(qkv[..., :2, :R].unflatten(-1, (R // 2, 2))).mul_(rotation)  # rotary, in place
            cache[:, :, width - k : width].view(P, H, k, 2, D).copy_(qkv[..., 1:, :].transpose(1, 2))
            keys, values = cache[:, :, :width, :D], cache[:, :, :width, D:]  # (P, H, width, D) views
            # one exact softmax over the prompt and the sample's own tokens (scale folded into q)
            attn = F.scaled_dot_product_attention(qkv[..., 0, :].transpose(1, 2), keys, values, attn_mask=mask, scale=1.0)
            attn = attn.transpose(1, 2).reshape(P * k, d)  # (P*k, d)
            if self.parallel:  # Pythia: x + attn(ln1(x)) + mlp(ln2(x)), both biases added once
                x = fc_out(act(fused[:, 3 * d :]), residual=dense(attn, residual=x))
            else:
                x = dense(attn, residual=x)
                x = fc_out(act(fc_in(norm2(x))), residual=x)
        return self.head(self.final_norm(x)).view(P, k, -1)


def rotary_order(head_dim: int, rotary_dims: int) -> Tensor:
    """Head dims with rotate_half's pairs (i, i + R/2) moved next to each other: [0, R/2, 1, R/2 + 1,
    ..., R/2 - 1, R - 1, R, ..., D - 1] (the dims past R, which rotary leaves alone, stay put)."""
    half = rotary_dims // 2
    pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=-1).reshape(-1)
    return torch.cat([pairs, torch.arange(rotary_dims, head_dim)])


def _norm(norm: torch.nn.LayerNorm, affine: bool = True):
    """The layer norm as a plain function call (no nn.Module dispatch per decode step); without its
    affine part when `affine` is False (folded into the next linear by `_folded`)."""
    weight = norm.weight.detach() if affine and norm.weight is not None else None
    bias = norm.bias.detach() if affine and norm.bias is not None else None
    return lambda x: F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


def _folded(norm: torch.nn.LayerNorm, linear: torch.nn.Linear, rows: Tensor | None = None,
            row_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(out, in) weight and bias of linear(norm(x)) as a linear of the plain-normalised x:
    W' = W diag(γ), b' = Wβ + b; output rows reordered by `rows`, then scaled by `row_scale`."""
    w = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else w.new_zeros(w.shape[0])
    if norm.bias is not None:
        bias = bias + w @ norm.bias.detach()
    if norm.weight is not None:
        w = w * norm.weight.detach()
    if rows is not None:
        w, bias = w[rows], bias[rows]
    if row_scale is not None:
        w, bias = w * row_scale[:, None], bias * row_scale
    return w.contiguous(), bias


def _activation(act):
    """transformers' exact GELU module as F.gelu; any other activation module is called as it is."""
    if type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is F.gelu:
        return F.gelu
    return act


def _bias(linear: torch.nn.Linear) -> Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


def _sum_bias(*linears: torch.nn.Linear) -> Tensor | None:
    """The biases of linears whose outputs are summed, added once (None when none has one)."""
    biases = [lin.bias.detach() for lin in linears if lin.bias is not None]
    return sum(biases[1:], biases[0].clone()) if biases else None


class PackedLinear:
    """residual + x Wᵀ + b for the decode grid's few-row x, W (out, in), in the fastest form here.
    Shared by the lean decode steps (NeoXDecoder here, hybridpo.fast.llama_decode.LlamaDecoder).

    On CPU in fp32 with MKL: W packed once into MKL's GEMM layout for a fixed row count
    (`torch.ops.mkl._mkl_reorder_linear_weight`, what torch.compile's CPU backend uses); an
    unpacked product repacks W at every call, which made the 16-row products of a Pythia-70m
    decode step read weights at ~10 GB/s against 44 GB/s of memory bandwidth (a 16-row product
    with the 50k-row LM head: 8.4 ms unpacked, 5.1 ms packed, in a microbenchmark). An input with another row count, or any other device / dtype, takes
    `torch.addmm` with a contiguous (in, out) copy (`copy`; else Wᵀ as it is).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int, copy: bool = True):
        self.weight, self.bias, self.rows, self.packed = weight, bias, 0, None
        self.io = weight.t().contiguous() if copy and not _can_pack(weight) else weight.t()
        self.pack(rows)

    def pack(self, rows: int) -> None:
        if _can_pack(self.weight) and rows != self.rows:
            try:  # an internal op: should a build lack it at run time, the addmm path serves
                self.rows, self.packed = rows, torch.ops.mkl._mkl_reorder_linear_weight(self.weight, rows)
            except RuntimeError:
                self.rows, self.packed = 0, None

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.packed is not None and x.shape[0] == self.rows:
            y = torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, self.rows)
            return y if residual is None else y.add_(residual)
        if residual is None:
            return torch.mm(x, self.io) if self.bias is None else torch.addmm(self.bias, x, self.io)
        y = torch.addmm(residual, x, self.io)
        return y if self.bias is None else y.add_(self.bias)


def _can_pack(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkl.is_available()
            and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight"))


@torch.no_grad()
def decode(model, prompt_kv, prompt_attn: Tensor, logits: Tensor, k: int, max_new_tokens: int, eos_id: int,
           pad_id: int, draw, decoder_class=None, linear=None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The decode loop on the (prompt, sample) grid; returns what rollout's transformers loop returns.

    prompt_kv: per layer (keys, values) (P, H, W, D) of the prefilled prompts (not repeated);
    prompt_attn (P, W): 1 on real tokens; logits (P, V): next-token logits at each prompt's last
    token; draw(logits (A, V), rows, t) -> (token, log π_τ, log sampler) for the A samples still
    running at step t, `rows` their original rows (None: all N), in row order (row i*k + j is
    sample j of prompt i), the order and count the transformers loop
    draws in, so both paths consume one random stream identically.
    Returns tokens, tok_logps, sampler tok_logps, mask (P*k, steps) and EOS flags (P*k,).

    `decoder_class` lays the weights out and runs a step: NeoXDecoder (the default), or another
    family's with the same interface (hybridpo.fast.llama_decode.LlamaDecoder); `linear` makes its
    products (default PackedLinear; hybridpo.fast.panel_linear.PanelLinear).

    Cache layout, per layer (P, H, W + k * max_new_tokens, 2D): the prompt's keys | values, then
    token t of sample j at column W + k*t + j. A query reads the columns up to its own, and the
    bias hides the prompt's padding and the other samples' columns.
    """
    P, W = prompt_attn.shape
    N, device = P * k, logits.device
    dec = (decoder_class or NeoXDecoder)(model, rows=N, linear=linear)
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    tok_logps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
    samp_logps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
    alive = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)

    C = W + k * max_new_tokens
    caches = []
    for keys, values in prompt_kv:
        cache = keys.new_empty((P, keys.shape[1], C, 2 * keys.shape[-1]))  # every column is written before a query reads it
        cache[:, :, :W] = torch.cat([dec.prompt_keys(keys), values], dim=-1)
        caches.append(cache)
    own = torch.arange(C - W, device=device) % k == torch.arange(k, device=device)[:, None]  # (k, C - W)
    allowed = torch.cat([(prompt_attn == 1)[:, None, :].expand(P, k, W), own.expand(P, k, C - W)], dim=-1)
    bias = torch.zeros((P, 1, k, C), dtype=caches[0].dtype, device=device).masked_fill(~allowed[:, None], float("-inf"))

    rotations = dec.rotary_tables(torch.arange(int(prompt_attn.sum(-1).max()) + max_new_tokens, device=device))
    pids = torch.arange(P, device=device)  # prompts still on the grid
    start = prompt_attn.sum(-1)  # (P,) position of each prompt's first sample token
    grid_logits = logits.repeat_interleave(k, dim=0).view(P, k, -1)  # (P, k, V)
    running = torch.ones((P, k), dtype=torch.bool, device=device)  # on the grid and not yet ended
    slots = torch.arange(k, device=device)
    steps = 0
    full = True  # every sample is running and every prompt is on the grid (rows = 0 .. N-1)
    for t in range(max_new_tokens):
        if full:  # the common case: whole-column writes, no index bookkeeping
            tok, lp, slp = draw(grid_logits.reshape(N, -1).float(), None, t)
            tokens[:, t], tok_logps[:, t], samp_logps[:, t], alive[:, t] = tok, lp, slp, True
            ended = tok == eos_id
            live = None
        else:
            live = running.reshape(-1)
            live_rows = (pids[:, None] * k + slots).reshape(-1)[live]  # original rows of the running samples
            tok, lp, slp = draw(grid_logits.reshape(live.shape[0], -1)[live].float(), live_rows, t)
            tokens[live_rows, t], tok_logps[live_rows, t], samp_logps[live_rows, t], alive[live_rows, t] = tok, lp, slp, True
            ended = tok == eos_id
        steps = t + 1
        if steps == max_new_tokens or bool(ended.all()):
            done[(live_rows if live is not None else slice(None))] |= ended
            break
        if live is None and not bool(ended.any()):
            grid_tok = tok
        else:
            if live is None:
                live, live_rows, full = running.reshape(-1), torch.arange(N, device=device), False
            done[live_rows[ended]] = True
            grid_tok = torch.full(live.shape, pad_id, dtype=torch.long, device=device)
            grid_tok[live] = tok
            running = running.reshape(-1).clone()
            running[live.nonzero().squeeze(-1)[ended]] = False
            running = running.view(-1, k)
            keep = running.any(-1)  # prompts with a sample still running
            if 2 * int(keep.sum()) <= len(pids):  # half the grid's prompts have ended: they leave it
                idx = keep.nonzero().squeeze(-1)
                pids, running, start, bias = pids[idx], running[idx], start[idx], bias[idx]
                grid_tok = grid_tok.view(-1, k)[idx].reshape(-1)
                caches = [cache[idx] for cache in caches]
                dec.repack(len(idx) * k)
        grid_logits = dec.step(grid_tok.view(len(pids), k), start + t, caches, bias, W + k * (t + 1), rotations)
    return tokens[:, :steps], tok_logps[:, :steps], samp_logps[:, :steps], alive[:, :steps], done
