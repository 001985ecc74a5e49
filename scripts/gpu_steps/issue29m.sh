#!/usr/bin/env bash
# Issue 29: which of the helpers' work slows the worker (logs under $OUT; about 4 minutes). 29n: idle neighbours
# of any kind left the in-process loop as fast (185-200 cases/s), while a campaign's worker beside helpers that took
# about one case a second paid 4x for materialise, references and judge. The loop beside 12 helpers given one case a
# second, 12 processes pulsing the GPU, 12 spinning CPUs; then beside one helper given a case a second.
source "$(dirname "$0")/common.sh"
L="--device cuda --profile nightly --cases 60 --fresh"
timeout "${N1_TIMEOUT:-200}" python scripts/bench_neighbours.py --kinds none,busy,pulse,spin --count 12 -- $L 2>&1 \
  | tee "$OUT/neighbours.md"
timeout "${N2_TIMEOUT:-60}" python scripts/bench_neighbours.py --kinds busy --count 1 -- $L 2>&1 | tee -a "$OUT/neighbours.md"
