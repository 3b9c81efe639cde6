# The measurements on a 2-core AMD EPYC of the Zen 3 generation (family 25, model 1: AVX2, no
# AVX-512), 2026-12-03, in the order they ran. Run from the repository root.
export HYBRIDPO_HOME=${HYBRIDPO_HOME:-$PWD/.cache/hybridpo}
# the decode with MKL's packed products and with the AVX2 panel product (then measured here only on Zen 2)
(cd docs/bench && PYTHONPATH=../.. ../../.venv/bin/python decode_bandwidth.py --threads 2 > zen3/decode_bandwidth.md)
# the training products: MKL against oneDNN (MKL as fast or faster here, so speed.train_gemm stays on MKL)
PYTHONPATH=. .venv/bin/python docs/bench/matmul_paths.py > docs/bench/zen3/matmul_paths.md
# a HyPO batch's model work, speed.decode_gemm library and panels alternated in one process
(cd docs/bench && ../../.venv/bin/python decode_gemm_paired.py --repeats 3 > zen3/decode_gemm_paired.md)
# the bars, with auto's decode (MKL's, before the rule took Zen 3) and the AVX2 panels forced, a fresh process each
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo,hybridpo hypo panels-gemm" --out docs/bench/zen3/hypo > docs/bench/zen3/hypo/run.log
# DPO against TRL 1.16 on identical batches, 3 steps (1 warm-up + 2 timed), a fresh process each
# (its speed.md re-read from speed.json afterwards, for the memory bar's like-for-like label)
.venv/bin/hybridpo bench speed --steps 3 --repeats 1 --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/zen3/dpo_trl > docs/bench/zen3/dpo_trl/run.log
.venv/bin/hybridpo bench speed --report-from docs/bench/zen3/dpo_trl --out docs/bench/zen3/dpo_trl > /dev/null
# the HyPO/DPO bar with the AVX2 decode taken by auto, 2 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 2 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen3/hypo_repeats > docs/bench/zen3/hypo_repeats/run.log
# Dec 3, evening: the AVX2 product with named accumulators (GCC 12 had kept the array of them on the
# stack, storing all 12 on every k), against its source at 219f192, alternated in one process
.venv/bin/python docs/bench/avx2_accumulators.py --before 219f192 --repeats 5 > docs/bench/zen3/avx2_accumulators.md
# the decode again, with the named accumulators
(cd docs/bench && PYTHONPATH=../.. ../../.venv/bin/python decode_bandwidth.py --threads 2 > zen3/decode_bandwidth_registers.md)
# the HyPO/DPO bar with them, 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen3/hypo_registers > docs/bench/zen3/hypo_registers/run.log
# the decode with the Llama block fused on the AVX2 form too (the "panels, fused block" rows)
(cd docs/bench && PYTHONPATH=../.. ../../.venv/bin/python decode_bandwidth.py --threads 2 > zen3/decode_bandwidth_fused.md)
# the HyPO/DPO bar with the fused block, 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen3/hypo_fused > docs/bench/zen3/hypo_fused/run.log
# Dec 3, night: the AVX2 product's block moved to csrc/avx2/tile.h (x read through two strides, for
# the span kernel too), against its source at fe3e5ef, alternated in one process
.venv/bin/python docs/bench/avx2_accumulators.py --before fe3e5ef --repeats 3 > docs/bench/zen3/avx2_tile.md
# the AVX2 span kernel: one span against torch's flash kernel, then a DPO batch's model work, the two alternated
PYTHONPATH=. .venv/bin/python docs/bench/span_kernel_one_span.py > docs/bench/zen3/span_kernel_one_span.md
.venv/bin/python docs/bench/span_kernel_paired.py --repeats 3 > docs/bench/zen3/span_kernel_paired.md
# the AVX2 head softmax: the ops alone, then a DPO batch's model work, the two alternated
(cd docs/bench && ../../.venv/bin/python head_softmax.py --repeats 3 > zen3/head_softmax.md)
# the bars with both taken by auto, 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen3/hypo_spans > docs/bench/zen3/hypo_spans/run.log
# where a DPO step's time goes now (our kernels' calls are not timed by the op timer: the step's wall
# time less the ops' sum is theirs, ~3 s; this run's matmuls ran at 144 GFLOP/s, a slow hour)
.venv/bin/python docs/bench/op_breakdown.py --warmup 2 --elementwise auto --rows 25 > docs/bench/zen3/op_breakdown.md
