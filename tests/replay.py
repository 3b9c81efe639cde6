"""Comparing samplers on the SAME samples, so no test depends on bit-identical draws across two
numerical paths (two decoders, two prefills, two CPUs): float rounding of the logits (~1e-6) can
move an inverse-CDF draw across a token boundary, and then every later token differs.

- `replaying(monkeypatch, rollout)`: the sampler's draw replays the tokens of a recorded rollout
  (at step t, the rows still running, in row order: the order both decoders draw in) and reports
  the log-probs of those tokens under the logits it is handed. Two decoders run under it see the
  same tokens, so their log-probs compare at 1e-5.
- `greedy_margin(model, prompts, responses)`: for greedy decoding, the smallest gap between the top
  two logits at any generated position (a plain padded forward). A gap far above the logits'
  rounding (MARGIN) guarantees two paths pick the same argmax on any CPU; tests assert it first.
"""

from __future__ import annotations

import torch

from hybridpo import rollout
from hybridpo.forward import layout

MARGIN = 1e-3  # logits round at ~1e-6 in fp32 on these tiny models: 1000x that is a safe gap


class Replay:
    """A stand-in for hybridpo.rollout's draw: the recorded tokens instead of random ones."""

    def __init__(self, recorded):
        self.tokens = recorded.tokens.flatten(0, 1)  # (N, T)
        self.alive = recorded.mask.flatten(0, 1)  # (N, T): before any stop-string cut, = running rows
        self.t = 0

    def __call__(self, logits, temperature, top_k, top_p, generator, u=None):
        rows = self.alive[:, self.t].nonzero().squeeze(-1)
        if len(rows) != logits.shape[0]:
            raise AssertionError(f"step {self.t}: {logits.shape[0]} rows drawn, the recording has {len(rows)} running")
        tok = self.tokens[rows, self.t].to(logits.device)
        self.t += 1
        if temperature == 0:
            lp = logits.float().log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            return tok, lp, torch.zeros_like(lp)
        scaled = logits.float() / temperature
        lp = scaled.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        slp = rollout._truncate(scaled, top_k, top_p).log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        return tok, lp, slp


def replaying(monkeypatch, recorded) -> Replay:
    replay = Replay(recorded)
    monkeypatch.setattr(rollout, "_draw", replay)
    return replay


@torch.no_grad()
def greedy_margin(model, prompts: list[list[int]], responses: list[list[list[int]]]) -> float:
    """The smallest top-1 minus top-2 logit gap over every position that predicts a response token."""
    ids, attn, spans = layout.padded_rows(prompts, responses, pad_id=0)
    logits = model(input_ids=ids, attention_mask=attn).logits.float()  # (N, T, V)
    gaps = []
    for row, (start, n) in enumerate(spans):
        top2 = logits[row, start : start + n].topk(2, dim=-1).values  # (n, 2)
        gaps.append((top2[:, 0] - top2[:, 1]).min())
    return float(torch.stack(gaps).min())


def frequent_token(model, prompts, pad_id: int) -> int:
    """A token the model emits often, used as EOS so that samples end at different steps."""
    r = rollout.sample(model, prompts, 4, max_new_tokens=12, eos_id=-1, pad_id=pad_id,
                       generator=torch.Generator().manual_seed(123), decoder="transformers")
    return int(r.tokens.flatten().mode().values)


def against_transformers(decoder: str, model, prompts, k, monkeypatch, pad_id: int, **kwargs):
    """transformers' decode draws; then transformers' and `decoder` run again drawing those very
    tokens, so their log-probs compare on the same samples whatever the CPU. Returns both rollouts."""
    def run(name):
        return rollout.sample(model, prompts, k, pad_id=pad_id, generator=torch.Generator().manual_seed(3),
                              decoder=name, **kwargs)

    recorded = run("transformers")
    out = {}
    for name in ("transformers", decoder):
        with monkeypatch.context() as m:
            replaying(m, recorded)
            out[name] = run(name)
    assert out["transformers"].responses == recorded.responses  # the replay drew the recording
    return out["transformers"], out[decoder]
