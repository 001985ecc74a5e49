#!/usr/bin/env bash
# One device call for several issue steps: `bash scripts/gpu_steps/run.sh 24 27` runs issue24.sh then issue27.sh,
# each with its logs under /tmp/gpu-logs/issueNN, then packs them into $OUT/logs.tar.gz (the device tool brings
# back at most 8 files, 2 folders down) and copies each step's summary beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL="${OUT:?set OUT}"; LOGS=/tmp/gpu-logs; rm -rf "$LOGS"; mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton, numpy, os; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__, 'cores', os.cpu_count())"
  git rev-parse --short HEAD 2>/dev/null; } > "$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"
for step in "$@"; do
  start=$(date +%s)
  echo "=== step $step"
  OUT="$LOGS/issue$step" bash "scripts/gpu_steps/issue$step.sh" > "$LOGS/issue$step.console.txt" 2>&1
  echo "step $step rc=$? wall $(( $(date +%s) - start )) s" | tee -a "$LOGS/steps.txt"
  tail -40 "$LOGS/issue$step.console.txt"
done
tar -czf "$FINAL/logs.tar.gz" -C /tmp gpu-logs
cp "$LOGS/steps.txt" "$LOGS/env.txt" "$FINAL/" 2>/dev/null
