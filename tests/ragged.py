"""Ragged prompt / response batches and their log-prob gradients, shared by the packed-layout
tests (tests/families, tests/fast): every layout must give the padded reference's numbers."""

import torch

CASES = {
    # prompt lengths, then per prompt its response lengths (1-token responses: predicted by the prompt alone)
    "mixed": ((5, 1, 9, 4), ((3, 7), (1,), (4, 1, 6), (1, 10))),  # 4 + 5 ... share rows: packed prefill
    "pairs": ((9, 6, 5), ((6, 3), (1, 4), (2, 8))),  # 6 + 5 > 9: one prompt per row, left-padded prefill
}


def batch(case: str, vocab: int, seed: int = 1):
    """(prompts, responses per prompt) of random ids in [2, vocab) with CASES[case]'s lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(2, vocab, (n,), generator=g).tolist()  # noqa: E731
    prompt_lens, response_lens = CASES[case]
    return [ids(n) for n in prompt_lens], [[ids(n) for n in ns] for ns in response_lens]


def grads(model, result):
    """Gradients of a weighted sum of the sequence log-probs (weights differ, so each response counts)."""
    w = torch.linspace(-1.0, 2.0, len(result.logps))
    model.zero_grad()
    (w * result.logps).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
