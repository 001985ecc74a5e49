#!/usr/bin/env bash
# Issue 29 item 1 / issue 26 item 3: variant-aware drawing on a foreign kernel. vLLM 0.34.0's file, nightly
# profile, $BUDGET s (default 150) with --variant-draw on, then the same campaign with it off, each with its own
# empty Triton cache (both start cold; the compile-ahead helpers share their campaign's cache). Prints, per run:
# cases/s, new variants and worker compilations per case after the first minute, distinct variants (and per
# hour), the jit phase, triage's share and the root causes. Expected wall time: 2 x (BUDGET + ~25 s), about
# 6 min at the default. Needs the carried .upstream-cache (see issue24.sh). Logs under $OUT.
set -u
OUT=${OUT:?set OUT to the log folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT MOE_LORA_FUZZ_CACHE=$ROOT/.upstream-cache PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
BUDGET=${BUDGET:-150}
IMPL=${IMPL:-vllm==0.34.0}
MODES=${MODES:-"on off"}
SHARE=${SHARE:-}  # e.g. SHARE=0.05: --new-variant-share for the "on" run (default 0.2)
mkdir -p "$OUT"
one() {  # mode
  local mode=$1 d="$OUT/draw-$1" start; rm -rf "$d" "$OUT/triton-cache-$1"
  start=$(date +%s)
  TRITON_CACHE_DIR="$OUT/triton-cache-$mode" timeout $(( BUDGET + 60 )) python -m moe_lora_fuzz run --impl "$IMPL" \
    --device cuda --profile nightly --budget "$BUDGET" --seed 29 --variant-draw "$mode" --out "$d" \
    ${SHARE:+$([ "$mode" = on ] && echo --new-variant-share "$SHARE")} > "$d.log" 2>&1
  echo "exit $? wall $(( $(date +%s) - start )) s" >> "$d.log"
  rm -rf "$OUT/triton-cache-$mode"  # binaries: not logs
}
# PARALLEL=1: the modes side by side (same GPU, same load: a fair comparison in half the time)
pids=()
for mode in $MODES; do
  if [ -n "${PARALLEL:-}" ]; then one "$mode" & pids+=($!); else one "$mode"; fi
done
for p in "${pids[@]}"; do wait "$p"; done
python - "$OUT" $MODES > "$OUT/summary.txt" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for mode in sys.argv[2:]:
    d = out / f"draw-{mode}"
    try:
        rep = json.loads((d / "report.json").read_text())
    except (OSError, ValueError) as e:
        print(f"== draw {mode}: no report ({e!r})"); continue
    v, ph = rep.get("variants", {}), rep.get("phases", {})
    jit = sum(p["s"] for k, p in ph.items() if k.split("/")[-1] == "jit")
    later = v.get("after_first_minute", {})
    print(f"== draw {mode}: {rep['cases']} cases in {rep['elapsed_s']} s = {rep['cases_per_s']} cases/s "
          f"({rep.get('triage', {}).get('cases_per_s_excluding_triage')} excluding triage)")
    print(f"   after the first minute: {later.get('cases')} cases, new variants/case {later.get('new_keys_per_case')}, "
          f"worker compilations/case {later.get('compiled_per_case')} (compiled {later.get('compiled')}, "
          f"loaded from the disk cache {later.get('loaded_from_disk_cache')})")
    print(f"   first minute: {v.get('first_minute')}")
    print(f"   distinct variants {v.get('distinct')} ({v.get('kernels')}); per hour after the first minute "
          f"{v.get('distinct_per_hour_after_first_minute')}; all runs {v.get('all_runs')}")
    print(f"   choices {v.get('choices')} knobs {v.get('knobs')} warmed ahead {v.get('warmed_ahead')}")
    print(f"   predictor {v.get('predictor')}")
    print(f"   jit phase {jit:.1f} s; precompile {rep.get('precompile')}; timeline {v.get('timeline')}")
    t = rep.get("triage", {})
    print(f"   triage: share {t.get('share_of_campaign')} minimised {t.get('minimised')} attached {t.get('attached')} "
          f"grouped by signature {t.get('grouped_by_signature')} untriaged causes {t.get('untriaged_root_causes')}")
    causes = rep.get("root_causes", [])
    print(f"   {len(causes)} root causes:")
    for c in causes:
        print(f"     {c.get('class')} {c['kind']} x{len(c['findings'])} {c['trigger'][:160]}")
PY
cat "$OUT/summary.txt"
