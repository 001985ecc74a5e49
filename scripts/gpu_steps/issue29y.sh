#!/usr/bin/env bash
# Issue 29, the round's last measurement (logs under $OUT; about 9 minutes):
# 1. tests/test_variants.py on the GPU (two CPU-tensor tests now marked interpreter; helpers compile only);
# 2. the in-process loop (scripts/bench_cases.py, our kernels, nightly): the same 60 cases each pass, then new cases
#    of the same compile classes (as a campaign meets them), then also with the twins, then with the allocator's
#    expandable segments: is the campaigns' gap the new shapes, the twins, or the process around the loop?
# 3. scripts/bench_campaigns.py, every implementation, cold then warm (cold as long as warm: it warms the cache).
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29y
timeout "${TESTS_TIMEOUT:-100}" python -m pytest -n 4 --moe-device cuda -p no:cacheprovider -q -rfs tests/test_variants.py \
  > "$OUT/gpu-tests.txt" 2>&1
echo "GPU tests: exit $?" | tee -a "$OUT/gpu-tests.txt"; tail -5 "$OUT/gpu-tests.txt"
for opts in "" "--fresh" "--fresh --twins"; do
  timeout "${INPROC_TIMEOUT:-60}" python scripts/bench_cases.py --device cuda --profile nightly --cases 60 $opts 2>&1 | tail -12
done > "$OUT/inproc.txt"
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout "${INPROC_TIMEOUT:-60}" python scripts/bench_cases.py \
  --device cuda --profile nightly --cases 60 --fresh 2>&1 | tail -12 >> "$OUT/inproc.txt"
cat "$OUT/inproc.txt"
[ "${IMPLS-x}" = "" ] && exit 0  # IMPLS="": the first two parts only
timeout "${BENCH_TIMEOUT:-420}" python scripts/bench_campaigns.py --device cuda --profile nightly \
  --cold-budget "${COLD_BUDGET:-35}" --budget "${BENCH_BUDGET:-55}" --steady-after "${STEADY_AFTER:-20}" \
  --deadline "${BENCH_DEADLINE:-410}" --out /tmp/issue29y --json "$OUT/bench.json" \
  --impls "${IMPLS:-ours,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0}" 2>&1 | tee "$OUT/bench.md"
