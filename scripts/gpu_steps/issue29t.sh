#!/usr/bin/env bash
# Issue 29's table: every implementation's nightly campaigns, cold and warm, one after the other on one GPU
# (scripts/bench_campaigns.py), plus vLLM 0.34.0 with variant drawing off (the case stream before issue 29) for
# the variants reached before/after. Logs under $OUT. Wall time: about 10 x (BENCH_BUDGET + 8) s.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29t
IMPLS="${IMPLS:-ours,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0,vllm==0.34.0 --variant-draw off}"
timeout "${BENCH_TIMEOUT:-560}" python scripts/bench_campaigns.py --device cuda --profile nightly --budget "${BENCH_BUDGET:-45}" \
  --deadline "${BENCH_DEADLINE:-550}" --impls "$IMPLS" --out /tmp/issue29t --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
tar -czf "$OUT/campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29t 2>/dev/null || true
