#!/usr/bin/env bash
# Issue 29's final measurements on one GPU (logs under $OUT; about 90 + 8 x (BENCH_BUDGET + 8) + LONG_BUDGET + 15 s):
# 1. the README's table: every implementation's nightly campaigns, cold then warm, one after the other
#    (scripts/bench_campaigns.py, triage off), with their phase tables;
# 2. vLLM 0.34.0 warm for LONG_BUDGET s (the Triton cache of its cold run above, the next seed but one): variants
#    compiled per case and distinct variants per hour after the first minute (report.json `variants`).
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29f
# 0. the fused generator (fuzz/data/fused_gen.py) bitwise against the torch path on this GPU; if it fails, the
#    measurements below run with it off (MOE_LORA_FUZZ_FUSED_GEN=0) and say so
timeout 120 python -m pytest tests/test_fused_gen.py "tests/test_tensors.py::test_cpu_and_gpu_build_bitwise_identical_tensors" \
  --device cuda -q -p no:cacheprovider -rs > "$OUT/fused-bitwise.txt" 2>&1
rc=$?; echo "fused generator tests on the GPU: exit $rc" | tee -a "$OUT/fused-bitwise.txt"; tail -3 "$OUT/fused-bitwise.txt"
[ "$rc" = 0 ] || { export MOE_LORA_FUZZ_FUSED_GEN=0; echo "FUSED GENERATION OFF for the measurements below"; }
for fused in ${MATERIALISE_ONLY-0 1}; do
  MOE_LORA_FUZZ_FUSED_GEN=$fused TRITON_CACHE_DIR=/tmp/issue29f-mat timeout 60 python scripts/bench_cases.py --device cuda \
    --profile nightly --cases 60 --materialise-only > "$OUT/materialise-fused$fused.txt" 2>&1
  echo "fused=$fused: $(tail -1 "$OUT/materialise-fused$fused.txt")"
done
timeout "${BENCH_TIMEOUT:-420}" python scripts/bench_campaigns.py --device cuda --profile nightly --budget "${BENCH_BUDGET:-35}" \
  --deadline "${BENCH_DEADLINE:-410}" --out /tmp/issue29f --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.md"
[ "${LONG_BUDGET:-100}" -gt 0 ] && TRITON_CACHE_DIR=/tmp/issue29f/triton-cold-3 timeout $(( ${LONG_BUDGET:-100} + 60 )) python -m moe_lora_fuzz run \
  --impl vllm==0.34.0 --device cuda --profile nightly --budget "${LONG_BUDGET:-100}" --seed 31 --triage-share 0 \
  --out /tmp/issue29f/long-vllm034 > "$OUT/long-vllm034.log" 2>&1
[ "${LONG_BUDGET:-100}" -gt 0 ] && python - /tmp/issue29f/long-vllm034/report.json > "$OUT/long-vllm034.txt" 2>&1 <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); v = r["variants"]
print(f"{r['cases']} cases in {r['elapsed_s']} s = {r['cases_per_s']} cases/s")
for k in ("distinct", "first_minute", "after_first_minute", "distinct_per_hour_after_first_minute", "choices", "all_runs", "warmed_ahead", "predictor", "timeline"):
    print(k, json.dumps(v.get(k)))
print("precompile", r.get("precompile"))
PY
cat "$OUT/long-vllm034.txt"
python scripts/phase_table.py /tmp/issue29f/long-vllm034 >> "$OUT/long-vllm034.txt" 2>&1
tar -czf "$OUT/campaigns.tar.gz" -C /tmp --exclude='triton-cold-*' issue29f 2>/dev/null || true
