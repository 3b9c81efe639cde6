"""Pure index math of the forward layouts: which token goes where, and who may attend to whom.

Nothing here calls a model: every function takes token-id lists (or index tensors) and returns
index tensors and masks, so the layouts are testable by hand. Conventions: `prompts:
list[list[int]]` (P prompts, each non-empty); `responses: list[list[list[int]]]` (for prompt i,
its responses); results in prompt-major order (N responses, M response tokens in all). Padding is
never inferred from token ids (pad may equal EOS): every mask is built from the list lengths.

Three layouts (hybridpo.forward.logprobs computes the same log-probs through each):

- padded: every (prompt, response) pair its own right-padded row (`padded_rows`);
- packed: each prompt ONCE in a row, followed by all of its responses; groups (a prompt and its
  responses) shorter than the widest share a row, first-fit decreasing (`rows_of`):

      row:  [ prompt_i | response_i1 | response_i2 | ... | prompt_j | ... | pad ]
      pos :  0 .. Lp-1  | Lp .. Lp+n1-1 | Lp .. Lp+n2-1 | ...          (restart per response)

  the 4D mask (`packed_attention_mask`) lets a response token see its prompt and the earlier
  tokens of its own response, never another response or another group;
- after a prompt pass: the prompts' keys / values are cached left-padded to width W (prompt i in
  columns W - |x_i| .. W - 1, `left_padded_index`), and only the responses are laid out, one row
  per prompt (`after_prompt_rows`), attending to the cache through `after_prompt_attention_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def check_inputs(prompts, responses) -> None:
    """The input contract of every layout; a ValueError says which part is off."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but responses for {len(responses)}")
    if not prompts or not any(rs for rs in responses):
        raise ValueError("need at least one prompt with a response")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: its first response token has nothing to condition on")


def flat_targets(responses) -> Tensor:
    """(M,) every response token, prompt-major."""
    return torch.tensor([t for rs in responses for r in rs for t in r], dtype=torch.long)


def response_lengths(responses) -> list[int]:
    return [len(r) for rs in responses for r in rs]


# ---------------------------------------------------------------------------------------------
# padded


def padded_rows(prompts, responses, pad_id: int) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """(ids (N, T) right-padded, attention mask (N, T) long, per row (start, length) of the span of
    the logits (position s predicts token s + 1) that predict its response tokens)."""
    pairs = [(p, r) for p, rs in zip(prompts, responses) for r in rs]
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (p, r) in enumerate(pairs):
        ids[row, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attn[row, : len(p) + len(r)] = 1
    return ids, attn, [(len(p) - 1, len(r)) for p, r in pairs]


def left_padded(prompts, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(ids (P, W), attention mask (P, W) long, position ids (P, W)): every prompt ends at column
    W - 1; positions count from each prompt's first real token."""
    P, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((P, width), pad_id, dtype=torch.long)
    attn = torch.zeros((P, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p) :] = 1
    return ids, attn, (attn.cumsum(-1) - 1).clamp(min=0)


# ---------------------------------------------------------------------------------------------
# packed


@dataclass
class Packed:
    input_ids: Tensor  # (R, T) groups (a prompt then its responses) back to back, right-padded with pad_id
    position_ids: Tensor  # (R, T) 0..Lp-1 on a prompt, restarting at Lp for each of its responses
    segment: Tensor  # (R, T) 0 on a prompt, j+1 on its response j, -1 on padding
    group: Tensor  # (R, T) index of the prompt whose group the position belongs to, -1 on padding
    needs_head: Tensor  # (R, T) bool, True at the U positions whose next token is a response token
    target_head: Tensor  # (M,) for each response token (prompt-major), its index into the U
    target_ids: Tensor  # (M,) the response tokens themselves
    prompt_start: Tensor  # (P,) flat position (row * T + column) of each prompt's first token
    response_last: Tensor  # (N,) flat position of each response's last token (prompt-major; an empty one: its prompt's last)


def rows_of(sizes: list[int]) -> list[list[int]]:
    """Groups (prompt + its responses, `sizes` tokens each) assigned to rows no wider than the widest
    group, first-fit in decreasing size: short groups share a row instead of padding it out. On
    TL;DR batches (prompts 142-511 tokens) one group per row would leave ~30% of the positions
    padding. Returns, per row, its groups' indices in row order."""
    width = max(sizes)
    rows: list[list[int]] = []
    free: list[int] = []
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):
        r = next((r for r, room in enumerate(free) if room >= sizes[g]), None)
        if r is None:
            rows.append([]), free.append(width)
            r = len(rows) - 1
        rows[r].append(g)
        free[r] -= sizes[g]
    return rows


def pack(prompts, responses, pad_id: int) -> Packed:
    """Lay out rows and index tensors; per-response Python, per-token work in torch ops."""
    sizes = [len(p) + sum(len(r) for r in rs) for p, rs in zip(prompts, responses)]
    rows, width = rows_of(sizes), max(sizes)
    R = len(rows)
    input_ids = torch.full((R, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((R, width), dtype=torch.long)
    segment = torch.full((R, width), -1, dtype=torch.long)
    group = torch.full((R, width), -1, dtype=torch.long)
    needs_head = torch.zeros((R, width), dtype=torch.bool)  # next token is a response token
    predictor: list = [None] * sum(len(rs) for rs in responses)  # per response (prompt-major): flat predicting columns
    prompt_start = [0] * len(prompts)
    response_last: list[int] = []
    first_response = [0]
    for rs in responses:
        first_response.append(first_response[-1] + len(rs))
    for row, groups in enumerate(rows):
        offset = 0
        for g in groups:
            p, rs = prompts[g], responses[g]
            lp = len(p)
            prompt_start[g] = row * width + offset
            input_ids[row, offset : offset + lp] = torch.tensor(p, dtype=torch.long)
            position_ids[row, offset : offset + lp] = torch.arange(lp)
            segment[row, offset : offset + lp] = 0
            group[row, offset : offset + sizes[g]] = g
            start = offset + lp
            for j, r in enumerate(rs):
                n = len(r)
                response_last.append(row * width + (start + n - 1 if n else offset + lp - 1))
                if n:
                    input_ids[row, start : start + n] = torch.tensor(r, dtype=torch.long)
                    position_ids[row, start : start + n] = torch.arange(lp, lp + n)
                    segment[row, start : start + n] = j + 1
                    # token 0 is predicted at the last prompt position, token t > 0 at start + t - 1
                    cols = torch.cat([torch.tensor([offset + lp - 1]), torch.arange(start, start + n - 1)])
                    needs_head[row, cols] = True
                    predictor[first_response[g] + j] = row * width + cols
                start += n
            offset += sizes[g]
    # each needed position is computed once; several responses share the last prompt position
    head_index = needs_head.view(-1).cumsum(0) - 1  # (R*T,) index into the U head positions
    used = [c for c in predictor if c is not None]
    flat_pred = torch.cat(used) if used else torch.zeros(0, dtype=torch.long)
    return Packed(
        input_ids=input_ids,
        position_ids=position_ids,
        segment=segment,
        group=group,
        needs_head=needs_head,
        target_head=head_index[flat_pred],
        target_ids=flat_targets(responses),
        prompt_start=torch.tensor(prompt_start, dtype=torch.long),
        response_last=_prompt_major(response_last, rows, responses),
    )


def _prompt_major(values: list[int], rows: list[list[int]], responses) -> Tensor:
    """Per-response values listed in packing order (rows, then groups in a row) -> prompt-major."""
    order = [g for groups in rows for g in groups]
    first = [0]
    for rs in responses:
        first.append(first[-1] + len(rs))
    out = [0] * len(values)
    i = 0
    for g in order:
        for j in range(len(responses[g])):
            out[first[g] + j] = values[i]
            i += 1
    return torch.tensor(out, dtype=torch.long)


def packed_attention_mask(segment: Tensor, dtype: torch.dtype, group: Tensor | None = None,
                          position_ids: Tensor | None = None, window: int | None = None) -> Tensor:
    """Additive mask (R, 1, T, T): 0 where query q may attend key k, the dtype's minimum elsewhere.

    q sees k iff k <= q, both are in the same group (prompt + its responses; `group` None = one
    group per row) and k is on the prompt or in q's own response; with a sliding `window`
    (hybridpo.forward.hf.sliding_window), also only if pos(q) - pos(k) < window, pos the (R, T)
    `position_ids` (the distance in q's own prompt + response). Padding queries see only
    themselves (their rows are never read; a non-empty row keeps softmax finite).
    """
    T = segment.shape[-1]
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]  # (R, T, 1), (R, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    allowed = causal & (q_seg >= 0) & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    if group is not None:
        allowed &= group[:, :, None] == group[:, None, :]
    if window is not None:
        allowed &= position_ids[:, :, None] - position_ids[:, None, :] < window
    allowed |= torch.eye(T, dtype=torch.bool, device=segment.device)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # (R, 1, T, T)


def left_padded_index(lengths: list[int], start: Tensor) -> tuple[Tensor, Tensor]:
    """Gather index from a packed forward into the left-padded (P, W) layout, W = max length.

    `start` (P,) is each prompt's first flat position in the packed rows (`Packed.prompt_start`).
    Returns (attention mask (P, W) long, 1 on real tokens; source flat position (P, W) of each
    column; padding columns read the prompt's first token and are masked out).
    """
    len_t = torch.tensor(lengths)
    W = max(lengths)
    col = torch.arange(W)
    attn = (col[None, :] >= W - len_t[:, None]).long()  # (P, W) left padding
    src = start[:, None] + (col[None, :] - (W - len_t[:, None])).clamp(min=0)  # (P, W)
    return attn, src


# ---------------------------------------------------------------------------------------------
# after a prompt pass


@dataclass
class AfterPrompt:
    input_ids: Tensor  # (P, T) prompt i's responses back to back in row i, right-padded with pad_id
    position_ids: Tensor  # (P, T) each response continues from its prompt's length
    segment: Tensor  # (P, T) j+1 on response j, -1 on padding
    needs_head: Tensor  # (P, T) bool, True at the U positions predicting a response token t > 0
    target_rows: Tensor  # (M,) per response token, its row in cat([prompt last logits (P), the U rows])
    target_ids: Tensor  # (M,) the response tokens


def after_prompt_rows(prompts, responses, pad_id: int) -> AfterPrompt:
    """One row per prompt holding only its responses; token 0 of every response is predicted by
    its prompt's last logits (row i of the prompt pass), token t > 0 at the response's column t - 1."""
    P = len(prompts)
    width = max(sum(len(r) for r in rs) for rs in responses)
    input_ids = torch.full((P, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((P, width), dtype=torch.long)
    segment = torch.full((P, width), -1, dtype=torch.long)
    needs_head = torch.zeros((P, width), dtype=torch.bool)
    predictor = []  # per response: -1 - i for the prompt's logits, else the flat predicting position
    for i, (p, rs) in enumerate(zip(prompts, responses)):
        start = 0
        for j, r in enumerate(rs):
            n = len(r)
            if n:
                input_ids[i, start : start + n] = torch.tensor(r, dtype=torch.long)
                position_ids[i, start : start + n] = torch.arange(len(p), len(p) + n)
                segment[i, start : start + n] = j + 1
                needs_head[i, start : start + n - 1] = True
                predictor.append(torch.cat([torch.tensor([-1 - i]), i * width + torch.arange(start, start + n - 1)]))
            start += n
    head_index = needs_head.view(-1).cumsum(0) - 1 + P  # flat position -> row after the P prompt rows
    flat = torch.cat(predictor)
    target_rows = torch.where(flat < 0, -1 - flat, head_index[flat.clamp(min=0)])
    return AfterPrompt(input_ids, position_ids, segment, needs_head, target_rows, flat_targets(responses))


def after_prompt_attention_mask(segment: Tensor, prompt_attn: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (P, 1, T, W + T) for responses laid out after a cached prompt of width W.

    segment (P, T): j+1 on response j, -1 on padding; prompt_attn (P, W): 1 on real prompt tokens.
    Query q sees every real prompt token and the earlier tokens of its own response; padding
    queries see only themselves (their rows are never read).
    """
    T = segment.shape[-1]
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]  # (P, T, 1), (P, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    own = (causal & (q_seg >= 0) & (k_seg == q_seg)) | torch.eye(T, dtype=torch.bool, device=segment.device)
    prompt = (prompt_attn[:, None, :] == 1) & (q_seg >= 0)  # (P, T, W)
    allowed = torch.cat([prompt, own], dim=-1)  # (P, T, W + T)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]
