#!/usr/bin/env bash
# Issue 29 item 2, the campaign loop around our kernels' oracle, on one GPU. Logs under $OUT. Expected wall time:
# about 4 minutes; at most 7 (every command has its own timeout, and no campaign starts after 5.5 minutes).
# 1. (~10 s) the worker's per-case check on this host: sandbox.fingerprint + changed after a case of ours, and the
#    pipe's round trip (scripts/gpu_steps/issue29c_micro.py).
# 2. (~45 s) one cold nightly campaign of ours (fills a Triton cache for the warm ones below).
# 3. (~3 min) warm nightly campaigns of ours, 30 s each, alternating: BEFORE (this tree with the worker and sandbox
#    files of commit daff969: the check before the answer, the id fingerprint) and AFTER (this tree), twice each,
#    then scripts/phase_table.py of each. Needs git here for BEFORE; without it only AFTER runs.
# 4. (~15 s) the in-process loop of ours at nightly sizes with twins (scripts/bench_cases.py): the limit to compare.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
W=/tmp/issue29c; rm -rf "$W"; mkdir -p "$W"
export TRITON_CACHE_DIR="$W/triton"
BUDGET="${BENCH_BUDGET:-30}"

timeout 45 python scripts/gpu_steps/issue29c_micro.py 2>&1 | tee "$OUT/issue29c_micro.txt"

BASE=""
if git rev-parse --verify -q daff969 >/dev/null 2>&1; then
  BASE="$W/before"; mkdir -p "$BASE"
  git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$BASE"  # this tree as it is (tracked files)
  for f in fuzz/execution/worker.py fuzz/runtime/sandbox.py; do git show "daff969:$f" > "$BASE/$f"; done
else
  echo "no git or no commit daff969 here: BEFORE is skipped" | tee "$OUT/issue29c_before_skipped.txt"
fi

campaign() {  # TAG TREE SEED
  if [ "$SECONDS" -gt 330 ]; then echo "campaign $1 skipped: the step has run ${SECONDS} s" | tee -a "$OUT/issue29c_tables.md"; return; fi
  (cd "$2" && PYTHONPATH="$2" timeout $((BUDGET + 40)) python -m moe_lora_fuzz run --impl ours --device cuda \
    --profile nightly --budget "$BUDGET" --seed "$3" --triage-share 0 --out "$W/$1") > "$OUT/issue29c_$1.log" 2>&1
  python scripts/phase_table.py "$W/$1" 2>&1 | tee -a "$OUT/issue29c_tables.md"
}
campaign cold "$PWD" 1
for round in 1 2; do
  [ -n "$BASE" ] && campaign "before$round" "$BASE" 2
  campaign "after$round" "$PWD" 2
done
grep -h "^## " "$OUT/issue29c_tables.md" | tee "$OUT/issue29c_summary.md"
for r in "$W"/before* "$W"/after*; do
  [ -f "$r/report.json" ] && cp "$r/report.json" "$OUT/issue29c_$(basename "$r")_report.json"
done

timeout 60 python scripts/bench_cases.py --device cuda --profile nightly --cases "${INPROC_CASES:-400}" --twins 2>&1 \
  | tee "$OUT/issue29c_inprocess.md"
