#!/usr/bin/env bash
# Issue 29 items 2-3 on one GPU: cases/s of real nightly campaigns per implementation (ours, SGLang 0.5.23,
# vLLM 0.33.0, vLLM 0.34.0), each cold (an empty TRITON_CACHE_DIR) then warm (same cache, next seed), one after
# the other, with the phase tables: scripts/bench_campaigns.py. Logs under $OUT.
# Expected wall time: about 5.5 minutes (8 campaigns of BENCH_BUDGET=25 s, plus ~10 s start and report each).
# Needs the release kernels in $MOE_LORA_FUZZ_CACHE (default: ./.upstream-cache, git-ignored: carry it along);
# without them those rows read "error" and ours is still measured.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
export MOE_LORA_FUZZ_CACHE="${MOE_LORA_FUZZ_CACHE:-$PWD/.upstream-cache}"
BUDGET="${BENCH_BUDGET:-25}"
ls "$MOE_LORA_FUZZ_CACHE" > "$OUT/issue29b_cache.txt" 2>&1
rm -rf /tmp/issue29b-campaigns
timeout 400 python scripts/bench_campaigns.py --device cuda --profile nightly --budget "$BUDGET" \
  --deadline 380 --out /tmp/issue29b-campaigns --json "$OUT/issue29b_bench.json" 2>&1 | tee "$OUT/issue29b_bench.md"
# each campaign's console (FINDING lines, warnings) for the record
tar -czf "$OUT/issue29b_campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29b-campaigns 2>/dev/null || true
