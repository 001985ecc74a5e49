#!/usr/bin/env bash
# Issue 29, what the worker shares with its helpers (logs under $OUT; about 5 minutes): scripts/bench_campaigns.py
# on our kernels, cold then warm (the cold campaign as long as it takes to warm the cache), three ways: helpers on
# any CPU (MOE_LORA_FUZZ_PIN_HELPERS=0, as before), helpers off the worker's CPUs (the default), and that with torch's and
# numpy's BLAS thread pools at 4 threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS); then $IMPLS (default none) the default way.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29z
B="--device cuda --profile nightly --cold-budget ${COLD_BUDGET:-30} --budget ${BENCH_BUDGET:-50} --steady-after ${STEADY_AFTER:-20}"
T="${ONE_TIMEOUT:-100}"
MOE_LORA_FUZZ_PIN_HELPERS=0 timeout "$T" python scripts/bench_campaigns.py $B --out /tmp/issue29z/unpinned \
  --impls ours --json "$OUT/bench-unpinned.json" 2>&1 | tee "$OUT/bench-unpinned.md"
timeout "$T" python scripts/bench_campaigns.py $B --out /tmp/issue29z/pinned \
  --impls ours --json "$OUT/bench-pinned.json" 2>&1 | tee "$OUT/bench-pinned.md"
OMP_NUM_THREADS=${THREADS:-4} OPENBLAS_NUM_THREADS=${THREADS:-4} MKL_NUM_THREADS=${THREADS:-4} timeout "$T" python scripts/bench_campaigns.py $B --out /tmp/issue29z/threads \
  --impls ours --json "$OUT/bench-threads.json" 2>&1 | tee "$OUT/bench-threads.md"
if [ -n "${IMPLS:-}" ]; then
  timeout "${BENCH_TIMEOUT:-380}" python scripts/bench_campaigns.py $B --out /tmp/issue29z/all --deadline "${BENCH_DEADLINE:-370}" \
    --impls "$IMPLS" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
fi
