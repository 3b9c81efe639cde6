#!/usr/bin/env bash
# GPU checks of docs/scaling.md, for a session that has a GPU machine (one GPU is enough; ~5 min).
# The CPU machines cannot run them: accelerate turns FSDP into CPU data parallel, DeepSpeed needs
# CUDA. Results go to $OUT (JSON + logs); copy the figures into docs/scaling.md.
#
# Prepare here (the device machine reaches no network, and ../shared does not travel):
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl
#   cp ../shared/tokenizers/pythia/tokenizer.json .gpu/
#   DS_BUILD_OPS=0 python3 -m pip wheel --no-deps -w .gpu/whl deepspeed==0.18.*   # pure Python, ops built on first use
#   (plus wheels of deepspeed's missing needs, e.g. hjson, pydantic: see the device README)
# then: run(command="bash scripts/gpu_checks.sh", carry=[".gpu"], timeout_s=540)
#
#   1. the training loop on one GPU (what the CPU tests cannot show): DPO and HyPO, fp32 and bf16
#      autocast, both samplers; steps/s and the final-weight difference between the samplers' runs
#   2. scripts/gpu_checks.py under configs/accelerate/{fsdp2,zero2,zero3}.yaml (1 process): which
#      of log-probs (packed / padded), the prompt pass, the three samplers, a step, save/load state
#      work under each wrapper, and how far their numbers are from a plain copy's
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_checks}; WORK=${WORK:-/tmp/gpu_checks}; STEPS=${STEPS:-20}
mkdir -p "$OUT" "$WORK"  # $OUT: the 7 summary files (the device tool brings back 8 at most); $WORK: runs, logs
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
TOK=${TOK:-.gpu/tokenizer.json}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
$PY - "$TOK" "$WORK/tiny" <<'PY' || exit 1
import sys
from hybridpo.zoo import init_model
init_model("gpt-neox", "tiny", sys.argv[1], sys.argv[2])
PY
$PY -m hybridpo.cli task gold --out "$WORK/data" --train 64 --eval 8 > "$WORK/task.log" 2>&1 || exit 1

# 1. the loop on one GPU
COMMON=(model.name_or_path="$WORK/tiny" model.tokenizer="$TOK" data.source="$WORK/data/pairs_train.jsonl"
        data.eval_source="$WORK/data/pairs_eval.jsonl" optim.batch_size=8 optim.max_steps=$STEPS optim.lr=1e-4
        optim.schedule=constant run.progress=false run.eval_examples=8 model.reference=copy)
for method in dpo hypo; do
  for precision in no bf16; do
    for sampler in builtin generate; do
      [ "$method" = dpo ] && [ "$sampler" = generate ] && continue
      run="$WORK/loop-$method-$precision-$sampler"
      start=$EPOCHREALTIME
      $PY -m hybridpo.cli train method=$method "${COMMON[@]}" run.mixed_precision="'$precision'" \
          speed.sampler=$sampler run.out_dir="$run" > "$run.log" 2>&1
      rc=$?
      echo "$method $precision $sampler rc=$rc seconds=$(awk "BEGIN {print $EPOCHREALTIME - $start}")" \
           "$(tail -n 1 "$run/metrics.jsonl" 2>/dev/null | cut -c1-300)" | tee -a "$OUT/loop.txt"
    done
  done
done

# 2. the wrappers, one process each
for cfg in fsdp2 zero2 zero3; do
  timeout 240 accelerate launch --config_file configs/accelerate/$cfg.yaml --num_processes 1 \
      scripts/gpu_checks.py --model "$WORK/tiny" --out "$OUT/$cfg.json" > "$WORK/$cfg.log" 2>&1
  echo "$cfg rc=$?" | tee -a "$OUT/wrappers.txt"
done
tail -n 8 "$WORK"/*.log > "$OUT/tails.txt" 2>&1
echo "done: $OUT"
