#!/usr/bin/env bash
# Issue 29: which of the helpers' work slows the worker (logs under $OUT; about 4 minutes). 29n: idle neighbours
# of any kind left the in-process loop as fast (185-200 cases/s), while a campaign's worker beside helpers that took
# about one case a second paid 4x for materialise, references and judge. The loop beside 12 helpers given one case a
# second, 12 processes pulsing the GPU, 12 spinning CPUs; then beside one helper given a case a second.
source "$(dirname "$0")/common.sh"
L="--device cuda --profile nightly --cases 60 --fresh"
timeout "${N1_TIMEOUT:-200}" python scripts/bench_neighbours.py --kinds none,busy,pulse,spin --count 12 -- $L 2>&1 \
  | tee "$OUT/neighbours.md"
timeout "${N2_TIMEOUT:-60}" python scripts/bench_neighbours.py --kinds busy --count 1 -- $L 2>&1 | tee -a "$OUT/neighbours.md"
# where a GPU campaign's host time goes: its parent (cProfile) and its worker (MOE_LORA_FUZZ_PROFILE_DIR), warm
R="--impl ours --device cuda --profile nightly --triage-share 0"
timeout 60 python -m moe_lora_fuzz run $R --budget 30 --seed 5 --out /tmp/issue29m/warmup > "$OUT/warmup.txt" 2>&1
MOE_LORA_FUZZ_PROFILE_DIR="$OUT/prof" timeout 80 python -m cProfile -o "$OUT/parent.pstats" -m moe_lora_fuzz run $R \
  --budget 40 --seed 6 --out /tmp/issue29m/profiled > "$OUT/profiled.txt" 2>&1
cp /tmp/issue29m/profiled/report.json "$OUT/profiled-report.json"
for f in "$OUT/parent.pstats" "$OUT"/prof/*.pstats; do
  python -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(25)" "$f" 2>&1 | tail -32
done > "$OUT/profiles.txt"
