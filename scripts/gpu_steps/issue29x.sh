#!/usr/bin/env bash
# Issue 29: why a campaign's worker pays 2-5x the in-process loop per case (logs under $OUT; about 7 minutes):
# 1. the in-process loop (scripts/bench_cases.py, our kernels, nightly), the baseline;
# 2. campaigns with compile-ahead helpers that compile only (the default now), with none, and SGLang's kernels;
# 3. our kernels again with helpers that launch what they compile (MOE_LORA_FUZZ_HELPERS_LAUNCH=1, as before).
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29x
timeout "${INPROC_TIMEOUT:-70}" python scripts/bench_cases.py --device cuda --profile nightly --cases 60 > "$OUT/inproc.txt" 2>&1
B="--device cuda --profile nightly --cold-budget 20 --budget ${BENCH_BUDGET:-60} --steady-after ${STEADY_AFTER:-20}"
timeout "${BENCH_TIMEOUT:-300}" python scripts/bench_campaigns.py $B --out /tmp/issue29x/a --deadline "${BENCH_DEADLINE:-290}" \
  --impls "${IMPLS:-ours,ours --precompile 0,sglang==0.5.23}" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
MOE_LORA_FUZZ_HELPERS_LAUNCH=1 timeout "${LAUNCH_TIMEOUT:-100}" python scripts/bench_campaigns.py $B --out /tmp/issue29x/b \
  --impls ours --json "$OUT/bench-launch.json" 2>&1 | tee "$OUT/bench-launch.md"
