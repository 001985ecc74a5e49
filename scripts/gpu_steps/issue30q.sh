#!/usr/bin/env bash
# Issue 30 follow-up (branch issue-30q): one kernel for quantized and unquantized calls, w8a8 activations quantized
# inside the kernel (no torch ops per call). Logs under $OUT. Expected wall time: about 3 minutes, at most 4 (tests with 4
# xdist workers <= 100 s; bench_quant <= 70 s; bench_kernels at M = 1, 4096 for this branch and for its base <= 2 x 35 s).
# Proves: (1) the quantized and unquantized kernels compile and pass on an H100 (kernel rows per scheme and
# granularity, bound tightness, the vllm-fp8 adapter, the quant mutants caught by campaigns, our kernels' edge rows);
# (2) time per call of ours per scheme vs bf16 (and vLLM 0.34 where its file is carried): w8a8 should now cost about
# what w8a16 does, not ~400 us more; (3) the unquantized path did not get slower: bench_kernels for this branch and
# for its base commit 8ffa79d on the same card, one after the other (base skipped when git is not available).
# Needs, for the vLLM column, $MOE_LORA_FUZZ_CACHE/vllm-0.34.0/vllm/lora/ops/triton_ops/fused_moe_lora_fp8_op.py
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
export MOE_LORA_FUZZ_CACHE="${MOE_LORA_FUZZ_CACHE:-$PWD/.upstream-cache}"
VLLM_FP8="$MOE_LORA_FUZZ_CACHE/vllm-0.34.0/vllm/lora/ops/triton_ops/fused_moe_lora_fp8_op.py"
BASE=8ffa79d

# PART=tests or PART=bench runs one half (a combined call runs the tests beside other steps, the timings alone)
if [ "${PART:-tests}" = tests ]; then
# 1. tests compiled on the GPU: quantized kernels, their bound, the vLLM adapter, quant quality campaigns (mutants
#    caught, ours-quant clean) and our kernels' rows (the unquantized path goes through the same kernel now)
Q=tests/test_quality.py::test_campaign_finds_mutant
timeout 100 python -m pytest -n 4 tests/test_quant.py tests/test_quant_bound.py tests/test_quant_vllm.py \
  tests/test_quant_quality.py tests/test_kernels.py "$Q[quant-act-scale-ignored]" "$Q[quant-channel-scale-by-k]" \
  "$Q[quant-scale-next-block]" "$Q[quant-scale-slot0]" --device cuda -p no:cacheprovider -q -ra --tb=short \
  2>&1 | tail -25 | tee "$OUT/issue30q_tests.txt"

fi
[ "${PART:-bench}" = bench ] || exit 0
# 2. time per call: ours bf16 and per scheme (vLLM 0.34 beside them when its file is carried)
timeout 70 python scripts/bench_quant.py --vllm-file "$VLLM_FP8" --out "$OUT/bench_quant.json" \
  2>&1 | tee "$OUT/bench_quant.txt"

# 3. the unquantized path, this branch vs its base on the same card (graph: device time; eager: with the host side)
echo "== bench_kernels, this branch ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))" | tee "$OUT/bench_kernels.txt"
timeout 35 python scripts/bench_kernels.py --ms 1,4096 2>&1 | tee -a "$OUT/bench_kernels.txt"
if git cat-file -e "$BASE" 2>/dev/null; then
  rm -rf /tmp/base30q && mkdir -p /tmp/base30q && git archive "$BASE" | tar -x -C /tmp/base30q
  echo "== bench_kernels, base $BASE" | tee -a "$OUT/bench_kernels.txt"
  (cd /tmp/base30q && PYTHONPATH=/tmp/base30q timeout 35 python scripts/bench_kernels.py --ms 1,4096) 2>&1 \
    | tee -a "$OUT/bench_kernels.txt"
else
  echo "base $BASE: skipped (no git history here)" | tee -a "$OUT/bench_kernels.txt"
fi
