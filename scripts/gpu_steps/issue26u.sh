#!/usr/bin/env bash
# Issue 26, upstream part: in-run vs offline root causes on each upstream file of the matrix, and the triage
# share. Runs the three current releases side by side (nightly, $BUDGET s each, default 200), then offline
# `triage` on a copy of each campaign directory, and prints both lists. Expected wall time: BUDGET + ~150 s.
# Needs the carried .upstream-cache (see issue24.sh). Logs under $OUT.
set -u
OUT=${OUT:?set OUT to the log folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT MOE_LORA_FUZZ_CACHE=$ROOT/.upstream-cache PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
BUDGET=${BUDGET:-200}
RELEASES=${RELEASES:-"sglang==0.5.23 vllm==0.33.0 vllm==0.34.0"}
mkdir -p "$OUT"
sleep "${START_DELAY:-0}"  # START_DELAY: let GPU tests of other steps finish first
pids=()
for r in $RELEASES; do
  d="$OUT/${r/==/-}"
  ( timeout $(( BUDGET + 90 )) python -m moe_lora_fuzz run --impl "$r" --device cuda --profile nightly \
      --budget "$BUDGET" --seed 26 --out "$d" > "$d.log" 2>&1; echo "exit $?" >> "$d.log" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
pids=()
for r in $RELEASES; do
  d="$OUT/${r/==/-}"; rm -rf "$d-offline"; cp -r "$d" "$d-offline"
  ( start=$(date +%s)
    timeout 150 python -m moe_lora_fuzz triage "$d-offline" --impl "$r" --device cuda > "$d-offline.log" 2>&1
    echo "exit $? wall $(( $(date +%s) - start )) s" >> "$d-offline.log" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
python - "$OUT" $RELEASES > "$OUT/summary.txt" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def causes(d):
    rep = json.loads((d / "report.json").read_text())
    return rep, [(c.get("class"), c["kind"], len(c["findings"]), "untriaged" in c["trigger"], c["trigger"][:200])
                 for c in rep.get("root_causes", [])]
for r in sys.argv[2:]:
    d = out / r.replace("==", "-")
    try:
        rep, inrun = causes(d)
        _, offline = causes(Path(str(d) + "-offline"))
    except (OSError, ValueError, KeyError) as e:
        print(f"{r}: no report ({e!r})"); continue
    print(f"== {r}: {rep['cases']} cases in {rep['elapsed_s']} s ({rep['cases_per_s']} cases/s); kinds {rep['kinds']}")
    print(f"   triage {rep.get('triage')}")
    print(f"   in-run {len(inrun)} root causes:"); [print("     ", c) for c in inrun]
    print(f"   offline {len(offline)} root causes:"); [print("     ", c) for c in offline]
PY
cat "$OUT/summary.txt"
