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
