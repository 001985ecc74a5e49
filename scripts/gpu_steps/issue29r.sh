#!/usr/bin/env bash
# Issue 29 (logs under $OUT; about 10 minutes as written: RUN_BUDGET, WARMUP_BUDGET, SETTINGS, KINDS and
# NEIGHBOURS_TIMEOUT shorten it): what slows a campaign's worker beside its helpers. 1. campaigns of our kernels
# after a warm-up campaign: as now (default); helpers building each case on the host, none of the generator's
# kernels on the GPU (hostbuild); every helper started with the campaign, none joining during it (startall; and
# startall_host, both); no helpers (noprecompile); CUDA's eager module loading (eager); 4 helpers (precompile4); the
# worker pinned to the CPUs helpers leave (pinworker); one torch/OpenMP thread per process (threads1); the worker
# with torch's default, a thread per CPU (threadsall, as before 2026-12-07). The worker's ms per case per phase
# from each report.json. 2. the in-process loop alone, beside 12 helpers given a case a second, helpers starting
# one every 2 s, 12 processes pulsing the GPU, 12 compiling Triton kernels with a CUDA context
# (scripts/bench_neighbours.py; other kinds on request).
source "$(dirname "$0")/common.sh"
rm -rf /tmp/issue29r
R="--impl ours --device cuda --profile nightly --triage-share 0"
timeout $(( ${WARMUP_BUDGET:-40} + 20 )) python -m moe_lora_fuzz run $R --budget "${WARMUP_BUDGET:-40}" --seed 6 --out /tmp/issue29r/warmup > "$OUT/warmup.txt" 2>&1
printf '%s\n' "| setting | cases/s | materialise | references | judge | device probe | ipc | compile (jit), ms per case | helpers: processes / cases / compiled |" \
  "|---|---|---|---|---|---|---|---|---|" > "$OUT/campaigns.md"
for how in ${SETTINGS:-default hostbuild startall startall_host eager}; do
  extra=""; env=""
  [ "$how" = precompile4 ] && extra="--precompile 4"
  [ "$how" = noprecompile ] && extra="--precompile 0"
  [ "$how" = pinworker ] && env="MOE_LORA_FUZZ_PIN_WORKER=1"
  [ "$how" = threads1 ] && env="OMP_NUM_THREADS=1"
  [ "$how" = threadsall ] && env="MOE_LORA_FUZZ_WORKER_THREADS=0"
  [ "$how" = hostbuild ] && env="MOE_LORA_FUZZ_HELPERS_BUILD=host"
  [ "$how" = startall ] && env="MOE_LORA_FUZZ_HELPERS_START=12"
  [ "$how" = startall_host ] && env="MOE_LORA_FUZZ_HELPERS_START=12 MOE_LORA_FUZZ_HELPERS_BUILD=host"
  [ "$how" = eager ] && env="CUDA_MODULE_LOADING=EAGER"
  env $env timeout $(( ${RUN_BUDGET:-35} + 20 )) python -m moe_lora_fuzz run $R $extra --budget "${RUN_BUDGET:-35}" --seed 6 \
    --out "/tmp/issue29r/$how" > "$OUT/$how.txt" 2>&1
  python - "$how" "/tmp/issue29r/$how/report.json" <<'PY' | tee -a "$OUT/campaigns.md"
import json, sys
how, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except (OSError, ValueError) as e:
    print(f"| {how} | no report ({e}) |"); sys.exit()
n, ph = max(1, r["cases"]), r["phases"]
ms = lambda test: sum(v["s"] for k, v in ph.items() if test(k)) * 1000 / n
cells = [ms(lambda k, s=s: k.endswith(s)) for s in ("materialise", "references", "judge")]
cells += [ms(lambda k, s=s: k == s) for s in ("probe", "ipc")]
jit = ms(lambda k: k.rpartition("/")[2] == "jit")
pre = r.get("precompile") or {}
print(f"| {how} | {r['cases'] / r['elapsed_s']:.1f} | " + " | ".join(f"{c:.2f}" for c in cells)
      + f" | {jit:.2f} | {pre.get('processes', 0)} / {pre.get('cases', 0)} / {pre.get('compiled', '-')} |")
PY
done
timeout "${NEIGHBOURS_TIMEOUT:-220}" python scripts/bench_neighbours.py --kinds "${KINDS:-none,busy,starting,pulse,ctxcompile}" \
  --count 12 -- --device cuda --profile nightly --cases 100 --fresh 2>&1 | tee "$OUT/neighbours.md"
python -c "import torch; print('torch threads', torch.get_num_threads())" | tee -a "$OUT/neighbours.md"
