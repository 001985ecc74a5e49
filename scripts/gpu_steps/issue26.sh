#!/usr/bin/env bash
# Issue 26 GPU evidence, one device call, expected wall time about 4.5 minutes on an H100 (timeouts cap it at 6.5):
#   1. cases until every required edge is reached, per seed (0, 1, 2), nightly GPU profile, our kernels
#      (3-case campaigns: the prelude; report.json coverage.cases_until_every_edge, first_reached);
#   2. the two-bug implementation (tests/flaky_impls.py:masking_bugs, one bug on most cases): 120 s, seed 0,
#      both causes found, one each (report.json root_causes, steering);
#   3. the intermittent implementation (tests/flaky_impls.py:one_in_five): 20 s, one intermittent cause.
# Logs and reports under $OUT (default gpu-out/issue26). Usage: OUT=gpu-out bash scripts/gpu_steps/issue26.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}/issue26"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/env.txt"
start=$(date +%s)
campaign() {  # name timeout args...
  local name=$1 limit=$2; shift 2; rm -rf "/tmp/i26-$name"
  timeout "$limit" python -m fuzz run --device cuda --out "/tmp/i26-$name" "$@" > "$OUT/$name.txt" 2>&1
  echo "rc=$?" >> "$OUT/$name.txt"
  cp "/tmp/i26-$name/report.json" "$OUT/$name.report.json" 2>/dev/null
  cp "/tmp/i26-$name/report.md" "$OUT/$name.report.md" 2>/dev/null
  cp "/tmp/i26-$name/report.html" "$OUT/$name.report.html" 2>/dev/null
}
for seed in 0 1 2; do
  campaign "edges-seed$seed" 60 --profile nightly --max-cases 3 --budget 50 --seed "$seed"
done
campaign masking 160 --impl tests/flaky_impls.py:masking_bugs --budget 120 --seed 0
campaign intermittent 50 --impl tests/flaky_impls.py:one_in_five --budget 20 --seed 0
python - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for p in sorted(out.glob("*.report.json")):
    r = json.loads(p.read_text())
    cov = r["coverage"]
    causes = [(c.get("class"), c["kind"], len(c["findings"]), c["trigger"][:90]) for c in r["root_causes"]]
    print(f"{p.name}: {r['cases']} cases in {r['elapsed_s']} s; cases until every edge "
          f"{cov.get('cases_until_every_edge')} (unreachable {cov.get('unreachable_edges')}, missing "
          f"{cov['missing_edges']}); triage share {r['triage'].get('share_of_campaign')}; "
          f"steering {r.get('steering')}")
    for c in causes:
        print("   ", c)
PY
echo "wall $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
