#!/usr/bin/env bash
# One device-tool call: the GPU test suite and the benchmarks, logs under $OUT (or ./gpu-out).
# Usage: bash scripts/gpu_check.sh [tests] [bench] [quality] [campaign SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/env.txt"
python -c "import torch, triton, numpy, hypothesis; print(torch.__version__, triton.__version__, numpy.__version__, hypothesis.__version__)" | tee -a "$OUT/env.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    tests) timeout 300 python -m pytest -n 4 --device cuda -p no:cacheprovider -q -x -ra 2>&1 | tail -40 | tee "$OUT/tests.txt" ;;
    bench) timeout 150 python scripts/bench_cases.py --device cuda 2>&1 | tee "$OUT/bench_cases.txt"
           timeout 200 python scripts/bench_kernels.py 2>&1 | tee "$OUT/bench_kernels.txt" ;;
    quality) timeout 300 python scripts/bench_quality.py --device cuda --seeds 5 --budget 20 2>&1 | tee "$OUT/bench_quality.txt" ;;
    campaign) shift; timeout $(( $1 + 60 )) python -m fuzz run --device cuda --profile nightly --budget "$1" --seed 7 --out "$OUT/campaign" 2>&1 | tail -15 | tee "$OUT/campaign.txt"
              cp "$OUT/campaign/report.json" "$OUT/campaign_report.json" 2>/dev/null ;;
  esac
  shift
done
