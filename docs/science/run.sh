#!/usr/bin/env bash
# The full run behind docs/science: both settings of `hybridpo experiment tldr`, one thread each
# (on a shared 2-core machine one thread per process degrades far less under load than two), at
# nice 5. The gold setting starts once the shared π_SFT exists. Every stage resumes: run this
# script again to continue an interrupted run. Logs: docs/science/run.log (this script, with the
# machine's load every 10 minutes), run_human.log, run_gold.log.
#   nohup docs/science/run.sh >> docs/science/run.log 2>&1 &
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
start=$(date +%s)
echo "start $(date -u)  $(uptime)"
nice -n 5 "$PY" -m hybridpo.cli experiment tldr --config configs/experiments/tldr_human.yaml >> docs/science/run_human.log 2>&1 &
human=$!
until [ -f runs/tldr/shared/sft/final/config.json ] || ! kill -0 $human 2>/dev/null; do sleep 20; done
nice -n 5 "$PY" -m hybridpo.cli experiment tldr --config configs/experiments/tldr_gold.yaml >> docs/science/run_gold.log 2>&1 &
gold=$!
while kill -0 $human 2>/dev/null || kill -0 $gold 2>/dev/null; do
  echo "$(date -u +%H:%M)  $(( ($(date +%s) - start) / 60 )) min  $(uptime | sed 's/.*load/load/')"
  sleep 600 & wait $!
done
wait $human; h=$?; wait $gold; g=$?
echo "done $(date -u): human exit $h, gold exit $g, $(( ($(date +%s) - start) / 60 )) min wall"
