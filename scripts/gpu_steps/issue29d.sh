#!/usr/bin/env bash
# Issue 29 diagnosis: why a campaign's worker is slower per case than the in-process loop (logs under $OUT; ~4 min).
# Our kernels, nightly, cold then warm, with the default helpers and with none, the worker under cProfile
# (MOE_LORA_FUZZ_PROFILE_DIR), then the in-process loop with twins and its cProfile.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
rm -rf /tmp/issue29d
MOE_LORA_FUZZ_PROFILE_DIR="$OUT/prof" timeout 200 python scripts/bench_campaigns.py --device cuda --profile nightly \
  --budget "${BENCH_BUDGET:-30}" --impls "ours,ours --precompile 0" --out /tmp/issue29d --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
export TRITON_CACHE_DIR=/tmp/issue29d/triton-cold-0
timeout 70 python scripts/bench_cases.py --device cuda --profile nightly --cases 60 --twins --host-profile > "$OUT/inproc.txt" 2>&1
tail -12 "$OUT/inproc.txt"
python - "$OUT/prof" > "$OUT/prof.txt" 2>&1 <<'PY'
import pstats, sys, pathlib
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.pstats")):
    print("#####", p.name)
    pstats.Stats(str(p)).sort_stats("tottime").print_stats(25)
    pstats.Stats(str(p)).sort_stats("cumulative").print_stats(40)
PY
