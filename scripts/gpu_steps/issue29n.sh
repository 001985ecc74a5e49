#!/usr/bin/env bash
# Issue 29: what slows a campaign's worker beside its helpers (logs under $OUT; about 6 minutes). In 29x a dozen
# helpers took 41 cases in a minute, yet the worker's phases cost 3-4x the loop's.
# 1. the in-process loop with 12 idle neighbours of each kind (scripts/bench_neighbours.py);
# 2. campaigns of our kernels, cold then warm, with helpers and without (--precompile 0).
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29n
timeout "${NEIGHBOURS_TIMEOUT:-200}" python scripts/bench_neighbours.py --count 12 -- --device cuda --profile nightly \
  --cases 60 --fresh 2>&1 | tee "$OUT/neighbours.md"
timeout "${BENCH_TIMEOUT:-250}" python scripts/bench_campaigns.py --device cuda --profile nightly \
  --cold-budget "${COLD_BUDGET:-40}" --budget "${BENCH_BUDGET:-40}" --steady-after "${STEADY_AFTER:-15}" \
  --out /tmp/issue29n --json "$OUT/bench.json" --impls "ours,ours --precompile 0" 2>&1 | tee "$OUT/bench.md"
