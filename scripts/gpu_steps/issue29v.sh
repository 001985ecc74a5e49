#!/usr/bin/env bash
# Issue 29: the tests this round's code touches, on the GPU (logs under $OUT; about 4 minutes with 12 workers):
# kernels and tensors (CPU = GPU bitwise), the fused generator, the worker's answer-first overlap, variant drawing and
# compile-ahead helpers, throughput, and every seeded bug's campaign (test_quality: the GPU keeps the self-check).
# -v: a run cut by its timeout still names each test that failed (xdist prints a line per result).
source "$(dirname "$0")/common.sh"
timeout "${TESTS_TIMEOUT:-330}" python -m pytest -n "${WORKERS:-12}" --moe-device cuda -p no:cacheprovider -v -rfs \
  tests/test_kernels.py tests/test_tensors.py tests/test_fused_gen.py tests/test_worker_overlap.py \
  tests/test_variants.py tests/test_throughput.py tests/test_quality.py tests/test_quality_variants.py \
  --durations=15 > "$OUT/gpu-tests.txt" 2>&1
echo "GPU tests: exit $?" | tee -a "$OUT/gpu-tests.txt"; grep -E "FAILED|ERROR|passed|failed" "$OUT/gpu-tests.txt" | tail -40
