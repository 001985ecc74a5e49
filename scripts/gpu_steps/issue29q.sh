#!/usr/bin/env bash
# Issue 29: which of the helpers' work slows the worker, and what avoids it (logs under $OUT; about 7 minutes).
# 29n: idle neighbours of any kind left the in-process loop as fast (185-200 cases/s), while a campaign's worker
# beside helpers that took ~1 case a second (each compiling several variants) paid 4x for materialise, references
# and judge. 1. the loop beside 12 helpers given a case a second, one such helper, 12 spinning CPUs, 12 processes
# pulsing the GPU; 2. campaigns of our kernels as now, with the worker pinned to the CPUs helpers leave
# (MOE_LORA_FUZZ_PIN_WORKER=1), and with 4 helpers.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29q
L="--device cuda --profile nightly --cases 200 --fresh"
{ timeout 170 python scripts/bench_neighbours.py --kinds none,busy,spin,pulse --count 12 -- $L 2>&1
  timeout 45 python scripts/bench_neighbours.py --kinds busy --count 1 -- $L 2>&1; } | tee "$OUT/neighbours.md"
B="--device cuda --profile nightly --cold-budget ${COLD_BUDGET:-25} --budget ${BENCH_BUDGET:-25} --steady-after 8"
timeout 150 python scripts/bench_campaigns.py $B --out /tmp/issue29q/a --impls "ours,ours --precompile 4" \
  --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
MOE_LORA_FUZZ_PIN_WORKER=1 timeout 80 python scripts/bench_campaigns.py $B --out /tmp/issue29q/b --impls ours \
  --json "$OUT/bench-pinworker.json" 2>&1 | tee "$OUT/bench-pinworker.md"
