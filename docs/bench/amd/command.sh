#!/usr/bin/env bash
# The SmolLM2 speed tables on an AMD EPYC (Zen 5, family 26; docs/bench/amd/). First, before any
# change for AMD (auto took MKL's products and torch's flash attention there): our kernels alone.
# Then with `auto` taking our kernels there (hybridpo.fast.kernels.measured_cpu): the HyPO/DPO bar
# over an epoch with the libraries' paths beside ours, and DPO against TRL over an epoch (hypo_epoch/,
# dpo_epoch/; their FLOP shares against torch's own product, MKL, alone).
set -e
export HYBRIDPO_HOME=${HYBRIDPO_HOME:-$PWD/.cache/hybridpo}
PYTHONPATH=. .venv/bin/python docs/bench/span_kernel_one_span.py > docs/bench/amd/span_kernel_one_span.md
PYTHONPATH=. .venv/bin/python docs/bench/decode_bandwidth.py --threads 2 > docs/bench/amd/decode_bandwidth.md
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo \
  --variants "hybridpo dpo,hybridpo dpo flash-kernel,hybridpo hypo,hybridpo hypo library-gemm flash-kernel" --out docs/bench/amd/hypo_epoch
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-dpo \
  --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model,trl dpo ref-model last-4" --out docs/bench/amd/dpo_epoch
# torch's fp32 products (MKL) against oneDNN's on the DPO step's shapes, then speed.train_gemm
# (hybridpo.fast.onednn_gemm) on one DPO batch, the two alternated in one process
PYTHONPATH=. .venv/bin/python docs/bench/matmul_paths.py > docs/bench/amd/matmul_paths.md
.venv/bin/python docs/bench/train_gemm_paired.py --repeats 3 > docs/bench/amd/train_gemm_paired.md
# with `auto` taking oneDNN's products on AMD (and the bench's peak the faster of MKL's and
# oneDNN's): the HyPO/DPO bar over an epoch, each beside its MKL variant, and DPO against TRL's best
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-hypo \
  --variants "hybridpo dpo,hybridpo dpo library-train-gemm,hybridpo hypo,hybridpo hypo library-train-gemm" --out docs/bench/amd/hypo_epoch_onednn
.venv/bin/hybridpo bench speed --steps 8 --repeats 1 --workload smollm2-dpo \
  --variants "hybridpo dpo,hybridpo dpo last-4,trl dpo ref-model last-4" --out docs/bench/amd/dpo_epoch_onednn
# the HyPO/DPO bar and DPO's share at 3 fresh processes per variant
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/amd/onednn_repeats
# the workloads of the earlier issues (random-weight GPT-NeoX: tiny, tldr, hypo) on this AMD EPYC
.venv/bin/hybridpo bench speed --workload all --repeats 1 --out docs/bench/amd/existing > docs/bench/amd/existing/run.log
# the LM head's dW (fused_head's blocks) on MKL's addmm against oneDNN: the op alone, then a DPO batch's model work
PYTHONPATH=. .venv/bin/python docs/bench/head_dw.py > docs/bench/amd/head_dw.md
.venv/bin/python docs/bench/head_dw_paired.py --repeats 8 > docs/bench/amd/head_dw_paired.md
# oneDNN's primitive caches and resident memory over 20 DPO steps of new lengths: uncapped, then as `gemms` caps them
PYTHONPATH=. ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 LRU_CACHE_CAPACITY=1024 .venv/bin/python docs/bench/primitive_cache.py
PYTHONPATH=. .venv/bin/python docs/bench/primitive_cache.py
.venv/bin/hybridpo bench speed --workload tiny --repeats 1 --steps 150 --variants "hybridpo dpo,hybridpo dpo library-train-gemm" --out docs/bench/amd/tiny_150_steps
# after the head's dW on oneDNN and the primitive-cache caps: the HyPO/DPO bar and DPO's share at 3 fresh processes
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/amd/head_dw_repeats
# RLOO against TRL's RLOOTrainer on SmolLM2
.venv/bin/hybridpo bench speed --repeats 1 --workload smollm2-rloo --out docs/bench/amd/rloo
# the LM head's softmax over the vocabulary on csrc/head_softmax.cpp against torch's ops: the ops alone, then a DPO batch's model work
.venv/bin/python docs/bench/head_softmax.py --repeats 4 > docs/bench/amd/head_softmax.md
.venv/bin/python docs/bench/head_softmax_hypo.py --repeats 3 > docs/bench/amd/head_softmax_hypo.md
# the HyPO/DPO bar and DPO's share with the head softmax kernel, 3 fresh processes per variant (run twice: the machine drifted)
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/amd/head_softmax_repeats
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/amd/head_softmax_repeats_2
# a reward model's training work with its backbone inside hybridpo.fast.block_scope or outside, alternated in one process
.venv/bin/python docs/bench/reward_scope.py --repeats 4 > docs/bench/amd/reward_scope.md
# the earlier workloads with the head softmax kernel
.venv/bin/hybridpo bench speed --workload all --repeats 1 --out docs/bench/amd/existing_head_softmax > docs/bench/amd/existing_head_softmax/run.log
# the panel kernel's two forms for a decode grid of more than 8 rows (pairs of panels, one pass over each panel), alternated in one process
.venv/bin/python docs/bench/panel_one_pass.py --repeats 5 --hypo-repeats 3 > docs/bench/amd/panel_one_pass.md
# smollm2-hypo with the one-pass panel kernel, 3 fresh-process repeats
.venv/bin/hybridpo bench speed --steps 8 --repeats 3 --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --out docs/bench/amd/one_pass_repeats > docs/bench/amd/one_pass_repeats/run.log
