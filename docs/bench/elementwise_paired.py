"""speed.elementwise on one SmolLM2 DPO batch, the two settings alternated in one process.

The DPO step's model work (policy forward with grad, reference forward without, backward) on the
first batch of the smollm2-dpo workload, `compiled` and `eager` one after the other `--repeats`
times, so a drift of the machine's load hits both alike; medians per phase. The optimizer is left
out (the settings do not touch it).

    .venv/bin/python docs/bench/elementwise_paired.py --repeats 4 > docs/bench/smollm2/elementwise_paired.md
    .venv/bin/python docs/bench/elementwise_paired.py --repeats 4 --last-n 4 > docs/bench/smollm2/elementwise_paired_last4.md

With --last-n the reference forward is the whole model's without grad (the training runs' frozen-trunk
reference shares the trunk instead).
"""

import statistics
import time

import torch

import paired
from hybridpo.bench.record import machine
from hybridpo.forward import response_logps
from hybridpo.models.load import train_last_n_layers


def main() -> None:
    parser = paired.arguments(__doc__, 4)
    parser.add_argument("--last-n", type=int, default=0, help="train only the last n blocks (0: every weight)")
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-dpo", args.batch)
    if args.last_n:
        train_last_n_layers(model, args.last_n)
    prompts, responses = paired.prompts_and_pairs(batch)
    pad = tokenizer.pad_token_id

    def step(setting: str, repeat: int) -> tuple[float, float, float, float]:
        t0 = time.perf_counter()
        out = response_logps(model, prompts, responses, pad_id=pad, elementwise=setting)
        t1 = time.perf_counter()
        with torch.no_grad():
            response_logps(model, prompts, responses, pad_id=pad, elementwise=setting)
        t2 = time.perf_counter()
        out.logps.sum().backward()
        t3 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0

    settings = ("eager", "compiled")
    times = paired.alternate(settings, step, args.repeats)
    tokens = sum(len(p) + sum(map(len, rs)) for p, rs in zip(prompts, responses))
    trained = f"the last {args.last_n} blocks trained" if args.last_n else "every weight trained"
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-dpo ({len(batch)} pairs, {tokens} tokens), "
          f"{trained}, median of {args.repeats} alternated repeats.\n")
    paired.table("speed.elementwise", ["policy forward", "reference forward", "backward", "total"], times)
    e, c = (statistics.median(t[3] for t in times[s]) for s in settings)
    print(f"\ncompiled / eager: {c / e:.3f} ({100 * (1 - c / e):.1f}% less time)")


if __name__ == "__main__":
    main()
