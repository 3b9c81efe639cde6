#!/usr/bin/env bash
# Copy the outputs of the TL;DR experiment (runs/tldr, see run.sh) into docs/science: per setting the
# Table-1 table, the coverage table, the claims, the generations side by side, the Figure-1 plot,
# the stage timings and every model's eval.json; and the data split.
set -eu
cd "$(dirname "$0")/../.."
for s in human gold gold_budget; do
  r=runs/tldr/$s
  [ -d "$r" ] || continue
  for f in table coverage claims generations; do [ -f "$r/$f.md" ] && cp "$r/$f.md" "docs/science/${s}_$f.md"; done
  [ -f "$r/claims.json" ] && cp "$r/claims.json" "docs/science/${s}_claims.json"
  [ -f "$r/plots/validation_kl.png" ] && cp "$r/plots/validation_kl.png" "docs/science/${s}_validation_kl.png"
  [ -f "$r/timing.json" ] && cp "$r/timing.json" "docs/science/${s}_timing.json"
  mkdir -p "docs/science/eval/$s"
  for e in "$r"/eval/*/eval.json; do [ -f "$e" ] && cp "$e" "docs/science/eval/$s/$(basename "$(dirname "$e")").json"; done
  for v in "$r"/*/validation_kl.jsonl; do [ -f "$v" ] && cp "$v" "docs/science/eval/$s/$(basename "$(dirname "$v")")_validation_kl.jsonl"; done
done
cp runs/tldr/shared/data/split.json docs/science/split.json
[ -f runs/tldr/gold/pairs/stats.json ] && cp runs/tldr/gold/pairs/stats.json docs/science/gold_pairs_stats.json
echo "copied into docs/science"
