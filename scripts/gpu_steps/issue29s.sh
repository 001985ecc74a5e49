#!/usr/bin/env bash
# Issue 29: every implementation's steady state on one GPU (logs under $OUT; about 5 x 90 + 45 s):
# 1. scripts/bench_campaigns.py, cold (20 s) then warm (50 s, steady after 15 s), our kernels also without
#    compile-ahead helpers (do helpers still slow the worker's GPU phases?);
# 2. a profiled warm campaign of our kernels (the worker's cProfile, MOE_LORA_FUZZ_PROFILE_DIR) if time is left.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29s
timeout "${BENCH_TIMEOUT:-480}" python scripts/bench_campaigns.py --device cuda --profile nightly --cold-budget 20 \
  --budget "${BENCH_BUDGET:-50}" --steady-after 15 --deadline "${BENCH_DEADLINE:-470}" --out /tmp/issue29s \
  --impls "${IMPLS:-ours,ours --precompile 0,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0}" --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
MOE_LORA_FUZZ_PROFILE_DIR="$OUT/prof" TRITON_CACHE_DIR=/tmp/issue29s/triton-cold-0 timeout "${PROFILE_TIMEOUT:-45}" \
  python -m moe_lora_fuzz run --impl ours --device cuda --profile nightly --budget 25 --seed 33 --triage-share 0 \
  --out /tmp/issue29s/profiled > "$OUT/profiled.log" 2>&1
python scripts/phase_table.py /tmp/issue29s/profiled > "$OUT/profiled-phases.txt" 2>&1
for f in "$OUT"/prof/*.pstats; do
  [ -f "$f" ] && python -c "import pstats, sys; s = pstats.Stats(sys.argv[1]); s.sort_stats('tottime').print_stats(45); s.sort_stats('cumulative').print_stats(60)" "$f" > "$f.txt" 2>&1
done
tar -czf "$OUT/campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29s 2>/dev/null || true
