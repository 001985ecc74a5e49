#!/usr/bin/env bash
# The main job: a bounded fuzz campaign against our kernels (GPU when present, else the CPU interpreter).
# Extra arguments go to `python -m fuzz run` (e.g. --budget 600 --impl mutant:topk-row-index).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python -m fuzz run --device auto --budget 120 --out "fuzz-out/$(date +%Y%m%dT%H%M%S)" "$@"
