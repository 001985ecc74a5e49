#!/usr/bin/env bash
# Issue 29, where a case's time goes on one GPU before optimising (logs under $OUT; about 5 minutes):
# 1. nightly campaigns of ours and vLLM 0.34.0, cold then warm, BENCH_BUDGET s each (scripts/bench_campaigns.py);
# 2. the in-process loop (no worker, no helpers) of vLLM 0.34.0 and SGLang 0.5.23 with twins, a cProfile of one pass.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29p
timeout "${BENCH_TIMEOUT:-260}" python scripts/bench_campaigns.py --device cuda --profile nightly --budget "${BENCH_BUDGET:-45}" \
  --impls "${IMPLS:-ours,vllm==0.34.0}" --out /tmp/issue29p --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
tar -czf "$OUT/campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29p 2>/dev/null || true
for impl in ${INPROC_IMPLS:-vllm==0.34.0 sglang==0.5.23}; do
  export TRITON_CACHE_DIR=/tmp/issue29p/triton-inproc
  timeout "${INPROC_TIMEOUT:-60}" python scripts/bench_cases.py --device cuda --profile nightly --cases "${INPROC_CASES:-40}" \
    --impl "$impl" --twins --host-profile > "$OUT/inproc-$impl.txt" 2>&1
  tail -12 "$OUT/inproc-$impl.txt"
done
