# The measurements on a 2-core AMD EPYC of the Zen 2 generation (family 23, model 49: AVX2, no
# AVX-512), 2026-12-03, in the order they ran. Run from the repository root.

# the training products: MKL against oneDNN (no gain here, so speed.train_gemm stays on MKL)
PYTHONPATH=. .venv/bin/python docs/bench/matmul_paths.py > docs/bench/zen2/matmul_paths.md
# the bars with every library path (before the AVX2 panel product)
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen2/hypo > docs/bench/zen2/hypo/run.log
# the decode with MKL's packed products and with the AVX2 panel product
(cd docs/bench && ../../.venv/bin/python decode_bandwidth.py > zen2/decode_bandwidth.md)
# a HyPO batch's model work, speed.decode_gemm library and panels alternated in one process
(cd docs/bench && ../../.venv/bin/python decode_gemm_paired.py --repeats 3 > zen2/decode_gemm_paired.md)
# the bars with the AVX2 panel product taken by auto
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/zen2/hypo_avx2 > docs/bench/zen2/hypo_avx2/run.log
# HyPO with MKL's decode (hypo/'s HyPO process had taken the AVX2 kernel already: see README.md)
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo --variants "hybridpo hypo library-gemm" --out docs/bench/zen2/hypo_library > docs/bench/zen2/hypo_library/run.log
