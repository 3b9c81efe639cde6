"""A reward model's training work on SmolLM2-135M-Instruct with its backbone inside
hybridpo.fast.block_scope (as hybridpo.forward.reward_scores runs it) or outside (the library's
products and modules as transformers has them), the two alternated in one process.

The reward model is the checkpoint as AutoModelForSequenceClassification with one label (a fresh
scalar head, as `make demo`'s first stage builds it). The work: the reward scores of a batch of the
smollm2-dpo workload (8 pairs, packed: each prompt once, its two responses after it) with grad, then
the backward of their sum (the Bradley-Terry loss costs the same); every weight trained. Medians of `--repeats` alternated
rounds after one warm-up each; before the timing the two settings' scores and gradients are compared.

    .venv/bin/python docs/bench/reward_scope.py --repeats 4 > docs/bench/amd/reward_scope.md
"""

import contextlib
import statistics
import time

import torch

import paired
from hybridpo.bench.record import machine
from hybridpo.forward import reward as reward_module
from hybridpo.zoo import resolve


def main() -> None:
    from transformers import AutoModelForSequenceClassification

    args = paired.arguments(__doc__, 4).parse_args()
    w, tokenizer, policy, batch = paired.setup("smollm2-dpo", args.batch)
    del policy  # only its batch and tokenizer are used here
    prompts, pairs = paired.prompts_and_pairs(batch)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(resolve(w.model), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()

    def run(setting: str):
        with paired.swapped(reward_module, "block_scope", lambda m: contextlib.nullcontext(), when=setting == "outside"):
            start = time.perf_counter()
            scores = reward_module.reward_scores(model, prompts, [list(p) for p in pairs], pad_id=tokenizer.pad_token_id)
            mid = time.perf_counter()
            scores.sum().backward()
            end = time.perf_counter()
        return scores.detach(), (mid - start, end - mid, end - start)

    agree = {}
    for setting in ("outside", "inside"):
        scores, _ = run(setting)
        agree[setting] = (scores, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    (sa, ga), (sb, gb) = agree["outside"], agree["inside"]
    grad_error = max(float((gb[n] - ga[n]).norm() / ga[n].norm().clamp(min=1e-30)) for n in ga)

    def step(setting: str, _repeat: int):
        times = run(setting)[1]
        model.zero_grad(set_to_none=True)
        return times

    times = paired.alternate(("outside", "inside"), step, args.repeats)
    print(f"{machine()}; SmolLM2-135M-Instruct as a reward model, batch {args.batch} of smollm2-dpo ({len(batch)} pairs), "
          f"every weight trained, median of {args.repeats} alternated repeats.\n")
    print(f"inside vs outside: scores within {float((sb - sa).abs().max()):.1e} (of values up to {float(sa.abs().max()):.2f}); "
          f"every parameter's gradient within {grad_error:.1e} of its norm\n")
    paired.table("backbone", ["forward", "backward", "total"], times)
    a, b = (statistics.median(t[-1] for t in times[s]) for s in ("outside", "inside"))
    print(f"\ninside / outside: {b / a:.3f} ({a - b:+.2f} s a step)")


if __name__ == "__main__":
    main()
