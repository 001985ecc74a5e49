#!/usr/bin/env bash
# One device call for this round's GPU evidence; logs under $OUT. Steps run in the order given:
#   smoke | phases | throughput | nightly2 | quality | nightly-cold | nightly-warm | cases | adapters | triage | tf32 | tests
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/env.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/env.txt"
python -c "import triton, torch, os; print('triton', triton.__version__, 'torch', torch.__version__, 'cores', os.cpu_count())" | tee -a "$OUT/env.txt"
run() {  # name seconds args...: a campaign into $OUT/name, its summary and report kept
  local name=$1 budget=$2; shift 2; rm -rf "/tmp/gr-$name"
  timeout $(( budget + 120 )) python -m moe_lora_fuzz run --device cuda --budget "$budget" --out "/tmp/gr-$name" "$@" \
    > "$OUT/$name.txt" 2>&1; echo "rc=$?" >> "$OUT/$name.txt"
  cp "/tmp/gr-$name/report.json" "$OUT/$name.report.json" 2>/dev/null
  tail -4 "$OUT/$name.txt"
  python - "$OUT/$name.report.json" <<'PY' 2>/dev/null | tee -a "$OUT/$name.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  cases {r['cases']} in {r['elapsed_s']} s = {r['cases_per_s']}/s; kinds {r['kinds']}; "
      f"root causes {len(r.get('root_causes', []))}; noop {r['coverage'].get('noop_share')}; "
      f"missing {r['coverage']['missing_edges']}; triage {r.get('triage', {}).get('share_of_campaign')}")
PY
}
while [ $# -gt 0 ]; do
  case "$1" in
    smoke) timeout 300 python -m pytest --device cuda -p no:cacheprovider -q -x tests/test_tensors.py tests/test_protocol.py \
             2>&1 | tail -5 | tee "$OUT/smoke.txt" ;;
    phases) for r in fresh:11 same:11 new:12; do run "ph-${r%:*}" "${PBUDGET:-60}" --profile nightly --seed "${r#*:}"; done
            python scripts/phase_table.py "$OUT"/ph-*.report.json | tee "$OUT/phases.txt" ;;
    throughput) rm -rf "${TRITON_CACHE_DIR:-$HOME/.triton/cache}"  # a fresh machine, then warm runs: same seed, new seed, no helpers
                for r in fresh:21 same:21 new:22; do run "tp-${r%:*}" "${TBUDGET:-90}" --profile nightly --seed "${r#*:}"; done
                run tp-nohelp "${TBUDGET:-90}" --profile nightly --seed 23 --precompile 0
                python scripts/phase_table.py "$OUT"/tp-*.report.json | tee "$OUT/throughput.txt" ;;
    nightly2) rm -rf /tmp/gr-n2; timeout "$(( ${NBUDGET:-120} + 240 ))" python scripts/nightly.py --budget "${NBUDGET:-120}" --out /tmp/gr-n2 \
                > "$OUT/nightly2.txt" 2>&1; echo "rc=$?" >> "$OUT/nightly2.txt"; tail -5 "$OUT/nightly2.txt"
              cp /tmp/gr-n2/report.json "$OUT/nightly2.report.json"
              python scripts/phase_table.py /tmp/gr-n2/shard*/report*.json | tee -a "$OUT/nightly2.txt" | grep "^##" ;;
    quality) timeout 900 python scripts/bench_quality.py --device cuda --profile nightly --seeds 1 --budget "${QBUDGET:-30}" \
               --skip-upstream 2>&1 | tee "$OUT/quality.txt" | grep "^|" ;;
    nightly-cold) run nightly-cold 90 --profile nightly --seed 11 ;;
    nightly-warm) run nightly-warm 90 --profile nightly --seed 12 ;;
    cases) { timeout 300 python scripts/bench_cases.py --device cuda --profile nightly --cases "${NCASES:-60}"
             timeout 300 python scripts/bench_cases.py --device cuda --cases "${CASES:-300}"; } 2>&1 | tee "$OUT/cases.txt" ;;
    adapters) for f in sglang_fused_moe_lora sglang_fused_moe_lora_buggy vllm_fused_moe_lora vllm_fused_moe_lora_buggy; do
                fw=${f%%_*}; run "adapter-$f" "${ABUDGET:-40}" --impl "$fw:tests/fakes/$f.py" --profile nightly --seed 5
              done ;;
    triage) run triage-two-bug 60 --impl tests/two_bug_impl.py:two_bugs --profile nightly --seed 3
            run triage-topk 45 --impl mutant:topk-row-index --profile nightly --seed 3 ;;
    tf32) run tf32-mutant 40 --impl mutant:fp32-silent-tf32 --profile nightly --seed 4
          run tf32-undeclared 30 --impl tests/protocol_impls.py:tf32_undeclared --seed 4 ;;
    tests) timeout "${TESTS_TIMEOUT:-420}" python -m pytest -n 8 --device cuda -p no:cacheprovider -q -ra --tb=short \
             2>&1 | tail -40 | tee "$OUT/tests.txt" ;;
  esac
  shift
done
