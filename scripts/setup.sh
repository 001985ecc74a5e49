#!/usr/bin/env bash
# Idempotent set-up: torch first (the local CPU wheel; a bare "torch" would pull a multi-GB CUDA build),
# then the rest. A machine that already has everything (the GPU machines) installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
python -c "import triton, numpy, hypothesis, xdist, pytest" 2>/dev/null || pip install -q -r requirements.txt
