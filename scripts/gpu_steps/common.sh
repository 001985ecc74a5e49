# Sourced by a GPU step: the repository root, $OUT made, the checkout importable, compiled Triton, and the release
# kernels from $MOE_LORA_FUZZ_CACHE (default ./.upstream-cache, git-ignored: carry it along).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[1]}")/../.."
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
export MOE_LORA_FUZZ_CACHE="${MOE_LORA_FUZZ_CACHE:-$PWD/.upstream-cache}"
