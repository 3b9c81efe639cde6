#!/usr/bin/env bash
# The two SmolLM2 bars that 1-repeat runs left at the edge (DPO's share of the matmul peak, HyPO's
# step over DPO's against the needed-FLOP ratio), re-measured with 3 fresh processes per variant
# (round-robin, medians): docs/bench/smollm2/repeats/speed.md. Then the decode's bandwidth, the
# cause named there: docs/bench/smollm2/decode_bandwidth.md. Run on a quiet machine.
set -e
cd "$(dirname "$0")/../../.."
.venv/bin/hybridpo bench speed --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo" --steps 3 --repeats 3 \
  --out docs/bench/smollm2/repeats
PYTHONPATH=. .venv/bin/python docs/bench/decode_bandwidth.py --threads 2 > docs/bench/smollm2/decode_bandwidth.md
