#!/usr/bin/env bash
# speed.elementwise (hybridpo.fast.compiled_elementwise) on SmolLM2: each variant with the compiled
# chains ("auto" picks them here) and without ("eager-elementwise"), one run, over a whole epoch of
# the 64 pairs (1 warm-up + 7 timed steps); the compile is paid inside the warm-up step (end to end).
set -e
B=".venv/bin/hybridpo bench speed --steps 8 --repeats 1"
$B --workload smollm2-dpo --variants "hybridpo dpo,hybridpo dpo eager-elementwise,hybridpo dpo last-4" --out docs/bench/smollm2/elementwise/dpo
$B --workload smollm2-hypo --variants "hybridpo dpo,hybridpo hypo,hybridpo hypo eager-elementwise" --out docs/bench/smollm2/elementwise/hypo
