#!/usr/bin/env bash
# Issue 29: the tests of the GPU worker's threads and the campaign's knobs, on the GPU (logs under $OUT; about a
# minute with 8 workers).
source "$(dirname "$0")/common.sh"
timeout "${TESTS_TIMEOUT:-100}" python -m pytest -n "${WORKERS:-8}" --moe-device cuda -p no:cacheprovider -v -rfs \
  tests/test_variants.py tests/test_cli.py -k "thread or knob or cpus or usage_errors or helper" \
  > "$OUT/gpu-tests.txt" 2>&1
echo "GPU tests: exit $?" | tee -a "$OUT/gpu-tests.txt"; grep -E "FAILED|ERROR|passed|failed" "$OUT/gpu-tests.txt" | tail -20
