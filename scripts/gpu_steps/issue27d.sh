#!/usr/bin/env bash
# Issue 27 diagnosis on the GPU machine's CPU path (triton 3.6, numpy 2.5, torch 2.11): the interpreter tests
# with full tracebacks and what an unpatched interpreter gives there. About 1 minute. Logs under $OUT.
set -u
OUT=${OUT:?set OUT}; cd "$(dirname "$0")/../.."; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 240 python -m pytest tests/test_interpreter.py --moe-device cpu -p no:cacheprovider -q -rA --tb=long \
  > "$OUT/interpreter_tests_long.txt" 2>&1; echo "exit $?" >> "$OUT/interpreter_tests_long.txt"
tail -15 "$OUT/interpreter_tests_long.txt"
TRITON_INTERPRET=1 timeout 200 python - > "$OUT/unpatched_probe.txt" 2>&1 <<'PY'
import re
from tests import test_interpreter as ti
import subprocess, sys, os
p = subprocess.run([sys.executable, "-c", ti.UNPATCHED_PROBE], capture_output=True, text=True,
                   env={**os.environ, "TRITON_INTERPRET": "1"})
print(p.stdout[-4000:]); print(p.stderr[-6000:])
PY
cat "$OUT/unpatched_probe.txt" | tail -20
