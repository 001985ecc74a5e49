#!/usr/bin/env bash
# Issue 24 GPU step: nightly-profile campaigns of the three current releases (SGLang 0.5.23, vLLM 0.33.0,
# vLLM 0.34.0), run side by side on one GPU from the carried release cache (no network on the GPU machine).
# Expected wall time: ~6 min (3 campaigns of --budget 300 in parallel, startup and triage included; hard
# limit 400 s each). Logs, reports and a summary go to $OUT.
#
# Needs: the cache folder .upstream-cache/ at the repository root, carried along (it is git-ignored: it holds
# upstream code). Fill it on a machine with the package index:
#   MOE_LORA_FUZZ_CACHE=$PWD/.upstream-cache python scripts/release_matrix.py --fetch-only \
#       --also sglang==0.5.23,vllm==0.33.0,vllm==0.34.0
set -u
OUT=${OUT:?set OUT to the log folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT MOE_LORA_FUZZ_CACHE=$ROOT/.upstream-cache HYPOTHESIS_PROFILE=nightly
BUDGET=${BUDGET:-300}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu BUDGET=10: a dry run of this script on a CPU machine
RELEASES="sglang==0.5.23 vllm==0.33.0 vllm==0.34.0"
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; du -sh "$MOE_LORA_FUZZ_CACHE"; } > "$OUT/env.txt" 2>&1
for r in $RELEASES; do
  if [ ! -f "$MOE_LORA_FUZZ_CACHE/${r/==/-}/release.json" ]; then echo "missing cache for $r" | tee -a "$OUT/env.txt"; fi
done
pids=()
for r in $RELEASES; do
  d="$OUT/${r/==/-}"
  ( start=$(date +%s.%N)
    timeout 400 python -m moe_lora_fuzz.fuzz run --impl "$r" --device "$DEVICE" --profile nightly --budget "$BUDGET" \
      --out "$d" > "$d.log" 2>&1
    echo "exit $? wall $(python -c "import time; print(round(time.time() - $start, 1))")" >> "$d.log" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
python - "$OUT" $RELEASES > "$OUT/summary.txt" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for r in sys.argv[2:]:
    d = out / r.replace("==", "-")
    try:
        rep = json.loads((d / "report.json").read_text())
    except (OSError, ValueError) as e:
        print(f"{r}: no report ({e})"); continue
    up = rep.get("upstream") or {}
    print(f"== {r}: {rep['cases']} cases in {rep['elapsed_s']} s ({rep['cases_per_s']} cases/s), "
          f"harness_error={rep.get('harness_error')}, kinds={rep['kinds']}")
    print(f"   branches: {up.get('branches')}")
    print(f"   missing_edges: {up.get('missing_edges')}")
    for rc in rep.get("root_causes", []):
        print(f"   root cause {rc['kind']} x{len(rc['findings'])}: {rc['trigger'][:300]}")
PY
cat "$OUT/summary.txt"
