#!/usr/bin/env bash
# The test suite (pre-merge on CPU: Triton's interpreter, both cores, derandomised Hypothesis profile).
# TEST_DEVICE=cuda runs the same suite, GPU tests included, on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-premerge}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python -m pytest -n 2 --moe-device "${TEST_DEVICE:-auto}" -m "not slow" -p no:cacheprovider "$@"
