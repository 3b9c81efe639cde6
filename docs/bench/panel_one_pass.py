"""The panel kernel's two forms for a decode grid of more than 8 rows (hybridpo/fast/csrc/
panel_linear.cpp): pairs of panels in two passes of 8 rows over each block, or one panel with all
rows in registers in one pass over K; on SmolLM2-135M-Instruct, the two alternated in one process.

First the decode of decode_bandwidth.py's shape (8 prompts of 128 tokens x k = 2 x 53 tokens, a
fixed token drawn so every row runs all steps) on hybridpo.fast.panel_linear.PanelLlamaDecoder:
the step's 121 products alone (best of 5 a round), the 113 MB head's product alone (best of 10),
the decode (best of 2); medians over `--repeats` rounds. Then a HyPO batch's model work
(docs/bench/paired.py's hypo_work, one seed a round, every other setting as `auto` has it),
`--hypo-repeats` rounds.

    .venv/bin/python docs/bench/panel_one_pass.py --repeats 5 --hypo-repeats 3 > docs/bench/amd/panel_one_pass.md
"""

import statistics

import torch

import paired
from hybridpo.bench.record import machine
from hybridpo.fast import neox_decode, panel_linear

FORMS = {"pairs": False, "one pass": True}


def decode_part(model, rounds: int) -> None:
    P, k, W, T = 8, 2, 128, 53
    kv, attn, logits, eos, draw = paired.prefilled(model, P, W, torch.Generator().manual_seed(0))

    dec = panel_linear.PanelLlamaDecoder(model, rows=P * k)
    products = list(dec._linears())  # the head, then q|k|v, o, gate|up, down per block
    inputs = {n: torch.randn(P * k, n) for n in {lin.weight.shape[1] for lin in products}}
    outputs = {}
    for form, one in FORMS.items():
        for lin in products:
            lin.one_pass = one
        outputs[form] = [lin(inputs[lin.weight.shape[1]]) for lin in products]
    diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(outputs["one pass"], outputs["pairs"]))

    def products_s():
        return paired.best(lambda: [lin(inputs[lin.weight.shape[1]]) for lin in products], 5)

    def head_s():
        return paired.best(lambda: dec.head(inputs[dec.head.weight.shape[1]]), 10)

    def decode_s(one: bool):
        with paired.swapped(panel_linear, "one_pass", lambda: one):
            return paired.best(lambda: neox_decode.decode(model, kv, attn, logits, k, T, eos_id=eos, pad_id=eos, draw=draw,
                                                           decoder_class=panel_linear.PanelLlamaDecoder,
                                                           linear=panel_linear.PanelLinear), 2)

    def measure(form: str, _round: int):
        for lin in products:
            lin.one_pass = FORMS[form]
        return products_s(), head_s(), decode_s(FORMS[form])

    times = paired.alternate(tuple(FORMS), measure, rounds)
    step_bytes = sum(lin.weight.numel() for lin in products) * 4
    print(f"### The decode ({P} prompts x k = {k} x {T} tokens, {P * k} rows), median of {rounds} alternated rounds\n")
    print(f"The two forms' outputs of the {len(products)} products differ by at most {diff:.1e} of each product's largest.\n")
    print("| form | 121 products ms | GB/s | head ms | head GB/s | decode s |\n|---|---:|---:|---:|---:|---:|")
    for form, runs in times.items():
        prod, head, decode = (statistics.median(c) for c in zip(*runs))
        print(f"| {form} | {prod * 1e3:.1f} | {step_bytes / prod / 1e9:.1f} | {head * 1e3:.2f} | "
              f"{dec.head.weight.numel() * 4 / head / 1e9:.1f} | {decode:.2f} |")
    a, b = (statistics.median(r[2] for r in times[f]) for f in FORMS)
    print(f"\none pass / pairs, the decode: {b / a:.3f} ({a - b:+.2f} s)\n")


def hypo_part(w, tokenizer, model, batch, batch_index: int, rounds: int) -> None:
    prompts, offline = paired.prompts_and_pairs(batch)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def step(form: str, seed: int) -> tuple[float, ...]:
        with paired.swapped(panel_linear, "one_pass", lambda: FORMS[form]):
            times = paired.hypo_work(model, w, prompts, offline, pad, eos, seed)[1]
        model.zero_grad(set_to_none=True)
        return times

    times = paired.alternate(tuple(FORMS), step, rounds)
    print(f"### A HyPO batch's model work (batch {batch_index} of smollm2-hypo, {len(batch)} prompts x k = {w.hypo_k} x "
          f"{w.hypo_new_tokens} tokens, every weight trained), median of {rounds} alternated rounds\n")
    paired.table("form", ["prompt pass", "sampling", "policy log-probs", "reference", "backward", "total"], times)
    a, b = (statistics.median(t[-1] for t in times[f]) for f in FORMS)
    s_a, s_b = (statistics.median(t[1] for t in times[f]) for f in FORMS)
    print(f"\none pass / pairs: sampling {s_b / s_a:.3f} ({s_a - s_b:+.2f} s), the step's model work {b / a:.3f} ({a - b:+.2f} s)")


def main() -> None:
    parser = paired.arguments(__doc__, 5)
    parser.add_argument("--hypo-repeats", type=int, default=3)
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-hypo", args.batch)
    print(f"{machine()}; SmolLM2-135M-Instruct, fp32, 2 threads.\n")
    with torch.no_grad():
        decode_part(model.eval(), args.repeats)
    if args.hypo_repeats:
        hypo_part(w, tokenizer, model.train(), batch, args.batch, args.hypo_repeats)


if __name__ == "__main__":
    main()
