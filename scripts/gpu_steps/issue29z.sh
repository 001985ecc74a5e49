#!/usr/bin/env bash
# Issue 29 follow-up: the GPU machine's CPU path from the command line (`--device cpu` where CUDA is present; logs
# under $OUT; about a minute): the CLI tests that start a command on the CPU, a short CPU campaign, a replay.
source "$(dirname "$0")/common.sh"
timeout 150 python -m pytest -n 8 --moe-device cuda -p no:cacheprovider -rfs -q tests/test_cli.py \
  -k "before_importing or usage_errors or knob" > "$OUT/cli-tests.txt" 2>&1
echo "CLI tests: exit $?" | tee -a "$OUT/cli-tests.txt"; tail -3 "$OUT/cli-tests.txt"
rm -rf /tmp/issue29z
timeout 120 python -m moe_lora_fuzz run --device cpu --budget 20 --out /tmp/issue29z > "$OUT/cpu-run.txt" 2>&1
echo "run --device cpu: exit $?" | tee -a "$OUT/cpu-run.txt"; tail -3 "$OUT/cpu-run.txt"
timeout 120 python -m moe_lora_fuzz replay tests/regressions/*.json --impl ours --device cpu > "$OUT/cpu-replay.txt" 2>&1
echo "replay --device cpu: exit $?" | tee -a "$OUT/cpu-replay.txt"; tail -3 "$OUT/cpu-replay.txt"
