#!/usr/bin/env bash
# Issue 29 item 2, device-side generation (fuzz/data/fused_gen.py). Logs under $OUT; expected wall time about
# 2 minutes (each step has its own timeout; at most about 4):
# 1. bitwise: tests/test_fused_gen.py on the GPU (the fused kernel on CUDA against the torch path on CUDA, every
#    byte: values in three dtypes and six scales, strided and empty views, grids, hashes, fills, whole nightly
#    and designed cases), and test_tensors' CPU-vs-GPU build test (now fused on the GPU against torch on the CPU);
# 2. materialise alone, 60 nightly cases, fused off (MOE_LORA_FUZZ_FUSED_GEN=0) then on;
# 3. the in-process fuzz loop with its phase table, the same 60 cases, off then on (one Triton cache: the first
#    run compiles our kernels' variants, the second loads them; the steady-state rates exclude the first pass).
set -u
OUT=${OUT:?set OUT to the log folder}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/issue29g-triton}
unset TRITON_INTERPRET
mkdir -p "$OUT"
start=$(date +%s)
timeout 120 python -m pytest tests/test_fused_gen.py "tests/test_tensors.py::test_cpu_and_gpu_build_bitwise_identical_tensors" \
  --device cuda -q -p no:cacheprovider -rs > "$OUT/bitwise.txt" 2>&1
echo "pytest exit $?" >> "$OUT/bitwise.txt"; tail -4 "$OUT/bitwise.txt"
for fused in 0 1; do
  MOE_LORA_FUZZ_FUSED_GEN=$fused timeout 60 python scripts/bench_cases.py --device cuda --profile nightly --cases 60 \
    --materialise-only > "$OUT/materialise-fused$fused.txt" 2>&1
  echo "fused=$fused: $(tail -1 "$OUT/materialise-fused$fused.txt")"
done
for fused in 0 1; do
  MOE_LORA_FUZZ_FUSED_GEN=$fused timeout 100 python scripts/bench_cases.py --device cuda --profile nightly --cases 60 \
    > "$OUT/loop-fused$fused.txt" 2>&1
  echo "fused=$fused:"; tail -12 "$OUT/loop-fused$fused.txt"
done
echo "wall $(( $(date +%s) - start )) s"
