#!/usr/bin/env bash
# Issue 29: a night's steady state, not a short campaign's (logs under $OUT; about 5 minutes): our kernels, a 90 s
# cold campaign that warms Triton's cache, then a 3-minute warm one measured after its first minute.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29l
timeout "${BENCH_TIMEOUT:-330}" python scripts/bench_campaigns.py --device cuda --profile nightly \
  --cold-budget "${COLD_BUDGET:-90}" --budget "${BENCH_BUDGET:-180}" --steady-after "${STEADY_AFTER:-60}" \
  --out /tmp/issue29l --impls "${IMPLS:-ours}" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
