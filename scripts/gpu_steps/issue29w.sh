#!/usr/bin/env bash
# Issue 29: cases per second on one GPU with K campaigns sharing it (scripts/nightly.py --shards-per-gpu K; logs
# under $OUT; about a minute and a half per K): one campaign warms Triton's cache, then each K of $KS (default
# "1 2 3") for the same budget. IMPL (default ours) names the implementation.
source "$(dirname "$0")/common.sh"
IMPL="${IMPL:-ours}"; B="${SHARD_BUDGET:-45}"; dir="/tmp/issue29w/${IMPL//[^a-z0-9.]/_}"
rm -rf "$dir"
echo "| $IMPL: shards on one GPU | cases | cases/s (per budget) | cases/s (per wall) | findings |" | tee -a "$OUT/shards.md"
echo "|---|---|---|---|---|" | tee -a "$OUT/shards.md"
for k in warm ${KS:-1 2 3}; do
  per=$([ "$k" = warm ] && echo 1 || echo "$k")
  start=$(date +%s.%N)
  timeout $((B + 90)) python scripts/nightly.py --gpus 1 --shards-per-gpu "$per" --budget "$B" --seed 7 \
    --impl "$IMPL" --out "$dir/k$k" > "$OUT/nightly-${IMPL//[^a-z0-9.]/_}-k$k.txt" 2>&1
  wall=$(python -c "import time; print(time.time() - $start)")
  python - "$k" "$B" "$wall" "$dir/k$k/report.json" <<'PY' | tee -a "$OUT/shards.md"
import json, sys
k, budget, wall, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
try:
    r = json.load(open(path))
    n = r["cases"]
    print(f"| {k} | {n} | {n / budget:.1f} | {n / wall:.1f} | {len(r.get('findings', []))} |")
except (OSError, KeyError, ValueError) as e:
    print(f"| {k} | no report ({e}) | | | |")
PY
done
