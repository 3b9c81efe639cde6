# The measurements on a 2-core AMD EPYC of the Zen 4 generation (family 25, model 17: AVX-512 on
# 256-bit units, no AMX), 2026-12-04, in the order they ran. Run from the repository root.
set -e
export HYBRIDPO_HOME=${HYBRIDPO_HOME:-$PWD/.cache/hybridpo}
# before any change for Zen 4 (auto took the libraries everywhere: the AVX-512 rule was Zen 5's only),
# our AVX-512 kernels against the libraries, each forced by its script: one span's attention,
PYTHONPATH=. .venv/bin/python docs/bench/span_kernel_one_span.py > docs/bench/zen4/span_kernel_one_span.md
# the 53-token decode and its products (MKL's packed product, the panel kernel, the fused block),
(cd docs/bench && PYTHONPATH=../.. ../../.venv/bin/python decode_bandwidth.py --threads 2 > zen4/decode_bandwidth.md)
# the training products on MKL and on oneDNN,
PYTHONPATH=. .venv/bin/python docs/bench/matmul_paths.py > docs/bench/zen4/matmul_paths.md
# the head's softmax: the ops alone, then a DPO batch's model work, the two alternated in one process,
(cd docs/bench && ../../.venv/bin/python head_softmax.py --repeats 3 > zen4/head_softmax.md)
# and the span kernel on a DPO batch, alternated in one process
.venv/bin/python docs/bench/span_kernel_paired.py --repeats 3 > docs/bench/zen4/span_kernel_paired.md
# with `auto` taking the three AVX-512 kernels and oneDNN's products on the Zen 4 EPYCs
# (hybridpo.fast.kernels.MEASURED_AMD, onednn_gemm.MEASURED_AMD): the HyPO/DPO bar, 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen4/hypo_repeats > docs/bench/zen4/hypo_repeats/run.log
# the panel kernel's two forms for a decode grid of more than 8 rows (pairs of panels, one pass over
# each panel: `panel_linear.one_pass`, chosen by vendor, measured on Zen 5), alternated in one process
.venv/bin/python docs/bench/panel_one_pass.py --repeats 5 --hypo-repeats 3 > docs/bench/zen4/panel_one_pass.md
# TRL 1.16, the comparison side (the DPO run below first ran without it, its TRL rows
# "unavailable", and the next line's first run was stopped; these are the runs after)
.venv/bin/python -m pip install -q -c requirements/lock.txt -e '.[bench]'
# DPO against TRL 1.16 on identical batches, 3 steps (1 warm-up + 2 timed), a fresh process each
.venv/bin/hybridpo bench speed --steps 3 --repeats 1 --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/zen4/dpo_trl > docs/bench/zen4/dpo_trl/run.log
# the workloads of the earlier issues (random-weight GPT-NeoX: tiny, tldr, hypo)
.venv/bin/hybridpo bench speed --workload all --repeats 1 --out docs/bench/zen4/existing > docs/bench/zen4/existing/run.log
# tiny DPO read 1.80x TRL (Zen 5: 2.4x) and tiny RLOO 1.93x (bar 2x): the tiny model with oneDNN's
# products and our span kernel each turned off, 2 fresh processes per variant
.venv/bin/hybridpo bench speed --workload tiny --repeats 2 --variants "hybridpo dpo,hybridpo dpo library-train-gemm,hybridpo dpo flash-kernel,trl dpo ref-model" --out docs/bench/zen4/tiny_paths > docs/bench/zen4/tiny_paths/run.log
# the same on tldr's Pythia-70m-shaped model (512 wide): oneDNN's products against MKL's
.venv/bin/hybridpo bench speed --workload tldr --repeats 2 --variants "hybridpo dpo,hybridpo dpo library-train-gemm" --out docs/bench/zen4/tldr_paths > docs/bench/zen4/tldr_paths/run.log
