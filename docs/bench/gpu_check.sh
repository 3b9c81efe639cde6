#!/usr/bin/env bash
# The SmolLM2 workloads on a GPU, against TRL 1.16: same shapes, same batches, random weights
# (seeded, the checkpoint's config), bf16 autocast over fp32 weights on both sides.
#
# Prepared for a session that is lent a GPU machine (none has run it yet: every figure in
# docs/bench/performance.md is CPU). Two halves, because the GPU machine reaches no registry:
#
#   bash docs/bench/gpu_check.sh prepare     # HERE (CPU side): wheels + the model's config and tokenizer
#   # then, through the device tool, one run (about 8 minutes of GPU time; timeout_s 590), carrying
#   # .whl and .cache/bench-gpu:
#   #   command: bash docs/bench/gpu_check.sh run
#   #   carry:   [".whl", ".cache/bench-gpu"]
#
# What the run reports (runs/bench-gpu/speed.md, copied to $OUT): step time, pairs/s end to end,
# tokens/s, peak host RSS (GPU memory is not measured by this table), the needed FLOPs against the
# measured bf16 matmul rate. What is NOT the same as on CPU: hybridpo's CPU-only fast paths
# (attention span by span, the fused head, the lean decoders, keeping freed memory) are off on a
# GPU by their auto rules (never measured there), so this measures the plain packed layout + 4D
# mask and transformers' decode step against TRL.
set -euo pipefail
cd "$(dirname "$0")/../.."

case "${1:-}" in
prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    mkdir -p .whl .cache/bench-gpu/smollm2-135m-shape
    # the GPU image has torch, transformers 5.17, accelerate, peft, pandas, pyarrow, but no trl or
    # datasets; hybridpo's lock pins transformers 5.24
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "trl==1.16.0" "datasets==5.2.0" "transformers==5.24.0" "dill==0.4.1" "multiprocess==0.70.19" "tokenizers==0.23.3"
    # config + tokenizer of SmolLM2-135M-Instruct (no weights: the GPU check uses random ones)
    src=$(PYTHONPATH=. python3 -c 'from hybridpo import zoo; print(zoo.resolve("smollm2-135m-instruct"))')
    cp "$src"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} \
        .cache/bench-gpu/smollm2-135m-shape/ 2>/dev/null || cp "$src"/*.json .cache/bench-gpu/smollm2-135m-shape/
    # the UltraFeedback file travels with shared/ only when the checkout has one; copy it beside
    mkdir -p .cache/bench-gpu/data/ultrafeedback
    cp ../shared/data/ultrafeedback/train_1000.jsonl .cache/bench-gpu/data/ultrafeedback/
    du -sh .whl .cache/bench-gpu
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import torch, transformers, trl; print(torch.__version__, transformers.__version__, trl.__version__, torch.cuda.get_device_name(0))'
    # shared/ for the data layer's recipe (ultrafeedback), as ../shared is laid out beside a checkout
    mkdir -p ../shared/data && cp -r .cache/bench-gpu/data/ultrafeedback ../shared/data/
    out=${OUT:-runs}/bench-gpu
    # 3 steps each (step 1 is the warm-up), one fresh process per variant, as on CPU
    python3 -m hybridpo.cli bench speed --workload smollm2 --model .cache/bench-gpu/smollm2-135m-shape \
        --random-weights --device cuda --precision bf16 --threads 8 --repeats 1 --steps 3 --out "$out" 2>&1 \
        | tee "${OUT:-runs}/gpu_check.log"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
