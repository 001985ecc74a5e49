#!/usr/bin/env bash
# One device call for several issue steps: `bash scripts/gpu_steps/run.sh 30 27` runs issue30.sh then issue27.sh;
# steps named in $BACKGROUND (e.g. BACKGROUND="24") run alongside them from the start. Each step logs under
# /tmp/gpu-logs/issueNN (DEADLINE=560: every step ends by then); at the end they are packed into $OUT/logs.tar.gz (the device tool brings back at most
# 8 files, 2 folders down) with steps.txt (exit code and wall time per step) beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL="${OUT:?set OUT}"; LOGS=/tmp/gpu-logs; rm -rf "$LOGS"; mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton, numpy, os; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__, 'cores', os.cpu_count())"
  git rev-parse --short HEAD 2>/dev/null; } > "$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"
T0=$(date +%s)
step() {  # DEADLINE (seconds from the start, default none) bounds every step, so the logs always get packed
  local start; start=$(date +%s)
  OUT="$LOGS/issue$1" timeout "$(( ${DEADLINE:-100000} - (start - T0) ))" bash "scripts/gpu_steps/issue$1.sh" \
    > "$LOGS/issue$1.console.txt" 2>&1
  echo "step $1 rc=$? wall $(( $(date +%s) - start )) s" | tee -a "$LOGS/steps.txt"
}
pids=()
for s in ${BACKGROUND:-}; do step "$s" & pids+=($!); done
for s in "$@"; do step "$s"; tail -30 "$LOGS/issue$s.console.txt"; done
for p in "${pids[@]}"; do wait "$p"; done
for s in ${BACKGROUND:-}; do tail -30 "$LOGS/issue$s.console.txt"; done
tar -czf "$FINAL/logs.tar.gz" -C /tmp gpu-logs
cp "$LOGS/steps.txt" "$LOGS/env.txt" "$FINAL/" 2>/dev/null
