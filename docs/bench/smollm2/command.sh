#!/usr/bin/env bash
# The SmolLM2 speed table (docs/bench/smollm2/): one workload per call, 3 steps (1 warm-up + 2
# timed), 1 fresh process per variant; each call writes its own speed.md / speed.json.
set -e
B=".venv/bin/hybridpo bench speed --steps 3 --repeats 1"
$B --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/smollm2/dpo
$B --workload smollm2-hypo --out docs/bench/smollm2/hypo
$B --workload smollm2-rloo --out docs/bench/smollm2/rloo
# the precomputed-reference variants on both sides (TRL's precompute_ref_log_probs), every weight trained
$B --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo precompute-ref,trl dpo ref-model,trl dpo precompute-ref" --out docs/bench/smollm2/dpo_precompute
# DPO over a whole epoch of the 64 pairs (1 warm-up + 7 timed steps): the steadier figure behind the bars
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/smollm2/dpo_epoch
bash docs/bench/smollm2/elementwise.sh  # speed.elementwise compiled vs eager over an epoch (docs/bench/smollm2/elementwise/)
# the same epoch after speed.elementwise (compiled chains under auto), both sides again in one run
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/smollm2/dpo_epoch_compiled
# speed.decode_gemm (the decode's products by our panel kernel, hybridpo.fast.panel_linear, against MKL's):
# one epoch run with both, the two alternated in one process on one HyPO step, the decode alone,
# and the HyPO/DPO bar over an epoch at 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo,hybridpo hypo library-gemm" --out docs/bench/smollm2/panel_gemm
.venv/bin/python docs/bench/decode_gemm_paired.py --repeats 4 > docs/bench/smollm2/decode_gemm_paired.md
PYTHONPATH=. .venv/bin/python docs/bench/decode_bandwidth.py --threads 2 > docs/bench/smollm2/decode_bandwidth.md
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/smollm2/panel_gemm_repeats
# the Llama block fused around the panel kernel (hybridpo.fast.panel_linear.PanelLlamaDecoder, what
# "panels" runs for Llama models since), and its products in pairs of panels: the decode alone, one
# HyPO step with "panels" and "library" alternated, and the HyPO/DPO bar at 3 fresh processes
PYTHONPATH=. .venv/bin/python docs/bench/decode_bandwidth.py --threads 2 > docs/bench/smollm2/decode_bandwidth_fused.md
.venv/bin/python docs/bench/decode_gemm_paired.py --repeats 4 > docs/bench/smollm2/decode_gemm_paired_fused.md
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/smollm2/fused_block_repeats
# speed.span_kernel (training attention span by span on our kernel, hybridpo/fast/csrc/span_attention.cpp):
# one span alone, one DPO batch with both kernels alternated in one process, the HyPO/DPO bar at 3
# fresh processes, where a HyPO step's model work loses against a DPO step's (phase by phase, both
# alternated in one process), and the DPO epoch with TRL beside it
PYTHONPATH=. .venv/bin/python docs/bench/span_kernel_one_span.py > docs/bench/smollm2/span_kernel_one_span.md
.venv/bin/python docs/bench/span_kernel_paired.py --repeats 3 > docs/bench/smollm2/span_kernel_paired.md
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/smollm2/span_kernel_repeats
.venv/bin/python docs/bench/hypo_dpo_paired.py --repeats 3 > docs/bench/smollm2/hypo_dpo_paired.md
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo flash-kernel,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/smollm2/dpo_epoch_span_kernel
# the DPO step's share of the matmul peak at 3 fresh processes, each against its own process's peak
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-dpo --variants "hybridpo dpo" --out docs/bench/smollm2/dpo_share_repeats
# the earlier workloads' bars with the span kernel (tiny, tldr, hypo; random-weight models)
.venv/bin/hybridpo bench speed --workload all --repeats 1 --out docs/bench/existing_span_kernel
# every speed.md re-read from its speed.json by this version's report (since Dec 2: the FLOP and token
# rates over the timed steps' sums, the HyPO/DPO bar on the same timed batches)
for d in docs/bench/*/ docs/bench/smollm2/*/; do
  if [ -f "$d/speed.json" ]; then .venv/bin/hybridpo bench speed --report-from "$d" --out "$d" > /dev/null; fi
done
