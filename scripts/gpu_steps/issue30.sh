#!/usr/bin/env bash
# Issue 30 (quantized fused MoE LoRA) on one GPU. Logs under $OUT. Expected wall time: about 3.5 minutes
# (tests ~60 s, three 20 s campaigns of our quantized kernels, one 45 s campaign of vLLM 0.34's op, bench ~40 s).
# Needs, for the vLLM parts, the kernel file extracted from the vllm 0.34.0 wheel into the carried cache:
#   $MOE_LORA_FUZZ_CACHE/vllm-0.34.0/fused_moe_lora_fp8_op.py
#   (unzip -p vllm-0.34.0-cp38-abi3-manylinux_2_28_x86_64.whl vllm/lora/ops/triton_ops/fused_moe_lora_fp8_op.py > ...)
# Without it those two steps print "skipped" and the rest runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
VLLM_FP8="${MOE_LORA_FUZZ_CACHE:-/nonexistent}/vllm-0.34.0/fused_moe_lora_fp8_op.py"

# 1. quant tests compiled (kernel rows per scheme, bound tightness, the vllm-fp8 adapter) and the quant seeded bugs
timeout 150 python -m pytest tests/test_quant.py tests/test_quant_bound.py tests/test_quant_vllm.py \
  "tests/test_quality.py::test_every_mutant_has_an_expectation" --device cuda -p no:cacheprovider \
  -q -ra --tb=short 2>&1 | tail -25 | tee "$OUT/issue30_tests.txt"
timeout 150 python -m pytest tests/test_quality.py -k quant --device cuda -p no:cacheprovider -q -ra --tb=short \
  2>&1 | tail -15 | tee "$OUT/issue30_quality.txt"

# 2. a short campaign of our quantized kernels per scheme (nightly, GPU-sized shapes): expect 0 findings
for scheme in fp8_w8a8 int8_w8a8 int8_w8a16; do
  timeout 80 python -m fuzz run --impl "ours-quant:$scheme" --device cuda --profile nightly --budget 20 --seed 30 \
    --out "$OUT/issue30_ours_$scheme" 2>&1 | tail -6 | tee "$OUT/issue30_ours_$scheme.txt"
done

# 3. vLLM 0.34's quantized op fuzzed (root causes with their classes in the report)
if [ -f "$VLLM_FP8" ]; then
  timeout 110 python -m fuzz run --impl "vllm-fp8:$VLLM_FP8" --device cuda --profile nightly --budget 45 --seed 30 \
    --out "$OUT/issue30_vllm_fp8" 2>&1 | tail -14 | tee "$OUT/issue30_vllm_fp8.txt"
else
  echo "skipped: $VLLM_FP8 not found" | tee "$OUT/issue30_vllm_fp8.txt"
fi

# 4. time per call, ours vs vLLM 0.34 on the same shapes (vLLM columns only with its file)
timeout 120 python scripts/bench_quant.py ${MOE_LORA_FUZZ_CACHE:+--vllm-file "$VLLM_FP8"} --out "$OUT/bench_quant.json" \
  2>&1 | tee "$OUT/bench_quant.txt"
