#!/usr/bin/env bash
# Issue 29 items 2-3 on one GPU. Logs under $OUT. Expected wall time: about 6 minutes.
# 1. (~5 min) cases/s of real nightly campaigns per implementation (ours, SGLang 0.5.23, vLLM 0.33.0, vLLM 0.34.0),
#    each cold (an empty TRITON_CACHE_DIR) then warm (same cache, next seed), one after the other, with the phase
#    tables: scripts/bench_campaigns.py (8 campaigns of BENCH_BUDGET=20 s, ~8 s start and report each).
# 2. (~1 min, at most 2.5) the in-process loop at nightly sizes on our kernels, same machine, before and after
#    this branch's judging rules (--rules before-29: naive cross-check on every case, the fp64 reference gathering
#    weights per pair in CPU-sized chunks, three host copies), with a device sync after every phase:
#    scripts/bench_cases.py. Both load our kernels' variants from the campaigns' Triton cache.
# Needs the release kernels in $MOE_LORA_FUZZ_CACHE (default: ./.upstream-cache, git-ignored: carry it along);
# without them those rows read "error" and ours is still measured.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
export MOE_LORA_FUZZ_CACHE="${MOE_LORA_FUZZ_CACHE:-$PWD/.upstream-cache}"
BUDGET="${BENCH_BUDGET:-20}"
ls "$MOE_LORA_FUZZ_CACHE" > "$OUT/issue29b_cache.txt" 2>&1
rm -rf /tmp/issue29b-campaigns
timeout 310 python scripts/bench_campaigns.py --device cuda --profile nightly --budget "$BUDGET" --deadline "${BENCH_DEADLINE:-290}" \
  --out /tmp/issue29b-campaigns --json "$OUT/issue29b_bench.json" 2>&1 | tee "$OUT/issue29b_bench.md"
# each campaign's console and report (FINDING lines, warnings), without the Triton caches
tar -czf "$OUT/issue29b_campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29b-campaigns 2>/dev/null || true

# warm from our kernels' campaigns above (their Triton cache: the same compile classes), so no run compiles much
export TRITON_CACHE_DIR=/tmp/issue29b-campaigns/triton-cold-0
for rules in before-29 current; do
  timeout "${INPROC_TIMEOUT:-75}" python scripts/bench_cases.py --device cuda --profile nightly --cases "${INPROC_CASES:-100}" --rules "$rules" 2>&1 \
    | tee -a "$OUT/issue29b_inprocess.md"
done
