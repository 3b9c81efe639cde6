"""speed.decode_gemm on one SmolLM2 HyPO batch, the two settings alternated in one process.

The HyPO step's model work on the first batch of the smollm2-hypo workload: the policy's prompt
pass (with grad), k = 2 samples of 53 tokens per prompt from it (the lean Llama decoder, its
products by `panels`, hybridpo.fast.panel_linear, with the block fused around them since
decode_gemm_paired_fused.md, or `library`, MKL), the policy's log-probs of
the pairs and samples after the pass, the reference's without grad (the same weights), and the
backward. `panels` and `library` run one after the other `--repeats` times, so a drift of the
machine's load hits both alike, and the training work after each decode shows any effect the
decode's memory has on it; medians per phase. The optimizer is left out (the settings do not touch it).

    .venv/bin/python docs/bench/decode_gemm_paired.py --repeats 4 > docs/bench/smollm2/decode_gemm_paired_fused.md

(docs/bench/smollm2/decode_gemm_paired.md is the same run before the block was fused.)
"""

import statistics

import paired
from hybridpo.bench.record import machine


def main() -> None:
    parser = paired.arguments(__doc__, 4)
    args = parser.parse_args()
    w, tokenizer, model, batch = paired.setup("smollm2-hypo", args.batch)
    prompts, offline = paired.prompts_and_pairs(batch)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id

    def step(setting: str, seed: int) -> tuple[float, ...]:
        times = paired.hypo_work(model, w, prompts, offline, pad, eos, seed, decode_gemm=setting)[1]
        model.zero_grad(set_to_none=True)
        return times

    settings = ("library", "panels")
    times = paired.alternate(settings, step, args.repeats)  # one seed per round: the same samples up to rounding
    print(f"{machine()}; SmolLM2-135M-Instruct, batch {args.batch} of smollm2-hypo ({len(batch)} prompts x k = "
          f"{w.hypo_k} x {w.hypo_new_tokens} tokens), every weight trained, median of {args.repeats} alternated repeats.\n")
    paired.table("speed.decode_gemm", ["prompt pass", "sampling", "policy log-probs", "reference", "backward", "total"], times)
    (lib_sample, lib_total), (pan_sample, pan_total) = (
        (statistics.median(t[1] for t in times[s]), statistics.median(t[-1] for t in times[s])) for s in settings)
    print(f"\npanels / library: sampling {pan_sample / lib_sample:.3f}, whole step {pan_total / lib_total:.3f} "
          f"({lib_total - pan_total:+.2f} s)")


if __name__ == "__main__":
    main()
