"""How close HyPO's sampler runs to this machine's memory bandwidth on SmolLM2-135M-Instruct: the
measurement behind the HyPO/DPO bar of docs/bench/smollm2/hypo (a decode step of 16 rows reads
every weight once and does 2 FLOPs per weight and row, so it is bound by bandwidth, not FLOP/s).

    PYTHONPATH=. python docs/bench/decode_bandwidth.py --threads 2 > docs/bench/smollm2/decode_bandwidth_fused.md

(docs/bench/smollm2/decode_bandwidth.md is an earlier run, before the fused block and the
paired panels.)

Prints, as markdown: the machine's read bandwidth (sum over a 1 GB tensor, best of 5), the
lean Llama decode of the bench's shape (8 prompts of 128 tokens x k = 2 samples x 53 tokens, no
EOS stop; best of 3), the bytes of weights each step reads, the bandwidth the step achieves, the
floor (weights / bandwidth), the one-time weight packing per `sample` call, and the rate at which
a 16-row product streams the head: with MKL's packed GEMM (`speed.decode_gemm` "library") and
with our panel kernel (hybridpo.fast.panel_linear, "panels"); the decode, and the step's products
alone, are timed with each, and the decode once more with the block fused around the kernel
(hybridpo.fast.panel_linear.PanelLlamaDecoder, what "panels" runs for Llama-family models: on the
AVX-512 kernels where they load, else on the AVX2 form's).
"""

from __future__ import annotations

import argparse

import torch

from hybridpo.bench.record import machine
from hybridpo.bench.workloads import build_model, get_workload
from hybridpo.fast import neox_decode, panel_linear
from hybridpo.fast.llama_decode import LlamaDecoder
from paired import best, prefilled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=128)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=53)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    big = torch.ones(1 << 28)  # 1 GB of fp32
    big.sum()
    read_s = best(lambda: big.sum(), 5)
    bandwidth = big.numel() * 4 / read_s
    del big
    head = torch.randn(49152, 576)  # the head's product alone, 16 rows, packed as the decode packs it
    x = torch.randn(16, 576)
    kinds = {"library": neox_decode.PackedLinear}
    if panel_linear.unsupported_reason() is None:
        kinds["panels"] = panel_linear.PanelLinear
    product_bandwidth = {}
    for kind, linear in kinds.items():
        packed = linear(head, None, rows=16, copy=False)
        packed(x)
        product_bandwidth[kind] = head.numel() * 4 / best(lambda: packed(x), 10)
        del packed
    del head

    model = build_model(get_workload("smollm2-hypo")).eval()
    P, k, W, T = args.prompts, args.k, args.prompt_length, args.new_tokens
    kv, attn, logits, eos, draw = prefilled(model, P, W)

    weights = sum(p.numel() for p in model.model.layers.parameters()) + model.get_output_embeddings().weight.numel()
    step_bytes = weights * 4
    print(f"Machine: {machine()}; torch threads {args.threads}; fp32.\n")
    print("| quantity | value |\n|---|---:|")
    print(f"| read bandwidth (sum over 1 GB, best of 5) | {bandwidth / 1e9:.1f} GB/s |")
    print(f"| weights read per decode step (30 blocks + tied head) | {step_bytes / 1e6:.0f} MB |")
    print(f"| floor: weights / read bandwidth per step, x {T - 1} steps | {step_bytes / bandwidth * (T - 1):.2f} s |")
    decoders = {kind: (LlamaDecoder, linear) for kind, linear in kinds.items()}
    if "panels" in kinds:  # the block fused around the kernel's products (what "panels" runs for Llama models)
        decoders["panels, fused block"] = (panel_linear.PanelLlamaDecoder, panel_linear.PanelLinear)
    for kind, (decoder, linear) in decoders.items():
        decode_s = best(lambda: neox_decode.decode(model, kv, attn, logits, k, T, eos_id=eos, pad_id=eos, draw=draw,
                                                   decoder_class=decoder, linear=linear), 3)
        pack_s = best(lambda: decoder(model, rows=P * k, linear=linear), 3)
        step_s = (decode_s - pack_s) / (T - 1)  # the first token comes from the prefill's logits
        dec = decoder(model, rows=P * k, linear=linear)
        products = list(dec._linears())  # the step's products in one order: head, then q|k|v, o, gate|up, down per block
        inputs = {n: torch.randn(P * k, n) for n in {lin.weight.shape[1] for lin in products}}
        products_s = best(lambda: [lin(inputs[lin.weight.shape[1]]) for lin in products], 5)
        del dec
        if kind in product_bandwidth:
            print(f"| {kind}: a 16-row product with the 113 MB head (best of 10) | {product_bandwidth[kind] / 1e9:.1f} GB/s |")
        print(f"| {kind}: decode, {P} prompts x k = {k} x {T} tokens (best of 3) | {decode_s:.2f} s |")
        print(f"| {kind}: of which laying the weights out once (`LlamaDecoder`) | {pack_s:.2f} s |")
        print(f"| {kind}: one decode step | {step_s * 1e3:.1f} ms |")
        if kind in kinds:  # the fused block runs the same products
            print(f"| {kind}: the step's {len(products)} products alone, weights from memory (best of 5) | "
                  f"{products_s * 1e3:.1f} ms = {step_bytes / products_s / 1e9:.1f} GB/s |")
        print(f"| {kind}: bandwidth a step achieves (weights / step time) | {step_bytes / step_s / 1e9:.1f} GB/s |")

if __name__ == "__main__":
    main()
