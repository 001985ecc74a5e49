#!/usr/bin/env bash
# Issue 29, the round's table (logs under $OUT; about 8 minutes): scripts/bench_campaigns.py, cold then warm (the
# cold campaign as long as it takes to warm the cache), first our kernels with helpers on any CPU
# (MOE_LORA_FUZZ_PIN_HELPERS=0, as before), then every implementation with helpers off the worker's CPUs.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29z
B="--device cuda --profile nightly --cold-budget ${COLD_BUDGET:-30} --budget ${BENCH_BUDGET:-50} --steady-after ${STEADY_AFTER:-20}"
MOE_LORA_FUZZ_PIN_HELPERS=0 timeout "${UNPINNED_TIMEOUT:-100}" python scripts/bench_campaigns.py $B --out /tmp/issue29z/unpinned \
  --impls ours --json "$OUT/bench-unpinned.json" 2>&1 | tee "$OUT/bench-unpinned.md"
timeout "${BENCH_TIMEOUT:-380}" python scripts/bench_campaigns.py $B --out /tmp/issue29z/all --deadline "${BENCH_DEADLINE:-370}" \
  --impls "${IMPLS:-ours,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0}" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
