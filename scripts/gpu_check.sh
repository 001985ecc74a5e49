#!/usr/bin/env bash
# GPU checks for one device call; logs under $OUT (or ./gpu-out). Steps run in the order given:
#   tests | quality | cases | kernels | tune | profile | sanitize | campaign SECONDS SHARD(i/n)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/env.txt"
python -c "import torch, triton, numpy, hypothesis; print(torch.__version__, triton.__version__, numpy.__version__, hypothesis.__version__)" | tee -a "$OUT/env.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    tests) timeout "${TESTS_TIMEOUT:-300}" python -m pytest -n 8 --device cuda -p no:cacheprovider -q -ra --tb=short 2>&1 | tail -60 | tee "$OUT/tests.txt" ;;
    quality) timeout 330 python scripts/bench_quality.py --device cuda --seeds 5 --budget 15 2>&1 | tee "$OUT/bench_quality.txt" ;;
    cases) timeout "${CASES_TIMEOUT:-300}" python scripts/bench_cases.py --device cuda --cases "${CASES:-300}" 2>&1 | tee "$OUT/bench_cases.txt" ;;
    kernels) timeout 300 python scripts/bench_kernels.py --ms "${BENCH_MS:-1,16,128,1024,4096}" 2>&1 | tee "$OUT/bench_kernels.txt" ;;
    tune) timeout "${TUNE_TIMEOUT:-400}" python scripts/tune_configs.py --ms "${TUNE_MS:-16,128,1024,4096}" --bms "${TUNE_BMS:-16,32,64}" 2>&1 | tee "$OUT/tune_configs.txt" ;;
    profile) for m in ${PROFILE_MS:-1024 4096}; do timeout 120 python scripts/profile_call.py --m "$m"; done 2>&1 | tee "$OUT/profile.txt" ;;
    sanitize)  # a known out-of-bounds read must be reported, the correct kernels on the same case must be clean
      r=tests/regressions/topk-row-index.json
      { timeout 120 python -m moe_lora_fuzz replay "$r" --device cuda --sanitize 2>&1 | tail -4
        timeout 120 python -m moe_lora_fuzz replay "$r" --impl ours --device cuda --sanitize 2>&1 | tail -4
        timeout 150 python -m moe_lora_fuzz run --device cuda --budget 60 --seed 3 --sanitize-every 25 --out /tmp/sanitized \
          2>&1 | tail -6
        python -c "import json; print('sanitizer', json.load(open('/tmp/sanitized/report.json'))['sanitizer'])"
      } 2>&1 | tee "$OUT/sanitize.txt" ;;
    campaign) timeout $(( $2 + 60 )) python -m moe_lora_fuzz run --device cuda --profile nightly --budget "$2" --seed 7 \
                --shard "$3" --out "$OUT/campaign" 2>&1 | tail -12 | tee "$OUT/campaign.txt"
              cp "$OUT/campaign/report.json" "$OUT/campaign_report.json" 2>/dev/null; shift 3; continue ;;
  esac
  shift
done
