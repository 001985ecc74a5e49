#!/usr/bin/env bash
# The main job: a bounded fuzz campaign against our kernels (GPU when present, else the CPU interpreter).
# Extra arguments go to `moe-lora-fuzz run` (e.g. --budget 600 --impl mutant:topk-row-index).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python -m moe_lora_fuzz run --device auto --budget 120 "$@"  # --out: a new fuzz-out/<time>-<impl>
