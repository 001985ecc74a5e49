#!/usr/bin/env bash
# Issue 29: cases per second on one GPU with K campaigns sharing it (scripts/nightly.py --shards-per-gpu K; logs
# under $OUT; about 4 minutes): one campaign warms Triton's cache, then K = 1, 2, 3 for the same budget each.
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29w
B="${SHARD_BUDGET:-45}"
for k in warm 1 2 3; do
  per=$([ "$k" = warm ] && echo 1 || echo "$k")
  timeout $((B + 60)) python scripts/nightly.py --gpus 1 --shards-per-gpu "$per" --budget "$B" --seed 7 \
    --out "/tmp/issue29w/k$k" > "$OUT/nightly-k$k.txt" 2>&1
  python - "$k" "$B" /tmp/issue29w/k$k/report.json <<'PY' | tee -a "$OUT/shards.md"
import json, sys
k, budget, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
try:
    r = json.load(open(path))
    print(f"| {k} | {r['cases']} | {r['cases'] / budget:.1f} | {len(r.get('findings', {}))} |")
except (OSError, KeyError, ValueError) as e:
    print(f"| {k} | no report ({e}) | | |")
PY
done
