#!/usr/bin/env bash
# GPU checks for one device call; logs under $OUT (or ./gpu-out). Steps run in the order given:
#   tests | quality | bench | campaign SECONDS SHARD(i/n)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/env.txt"
python -c "import torch, triton, numpy, hypothesis; print(torch.__version__, triton.__version__, numpy.__version__, hypothesis.__version__)" | tee -a "$OUT/env.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    tests) timeout 300 python -m pytest -n 8 --device cuda -p no:cacheprovider -q -ra --tb=short 2>&1 | tail -60 | tee "$OUT/tests.txt" ;;
    quality) timeout 330 python scripts/bench_quality.py --device cuda --seeds 5 --budget 15 2>&1 | tee "$OUT/bench_quality.txt" ;;
    bench) timeout 100 python scripts/bench_cases.py --device cuda --cases 300 2>&1 | tee "$OUT/bench_cases.txt"
           timeout 300 python scripts/bench_kernels.py 2>&1 | tee "$OUT/bench_kernels.txt" ;;
    campaign) timeout $(( $2 + 60 )) python -m fuzz run --device cuda --profile nightly --budget "$2" --seed 7 \
                --shard "$3" --out "$OUT/campaign" 2>&1 | tail -12 | tee "$OUT/campaign.txt"
              cp "$OUT/campaign/report.json" "$OUT/campaign_report.json" 2>/dev/null; shift 3; continue ;;
  esac
  shift
done
