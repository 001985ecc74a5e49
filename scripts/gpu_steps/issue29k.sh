#!/usr/bin/env bash
# Issue 29: the in-process fuzz loop alone and beside neighbours (logs under $OUT; about 1.5 minutes as written):
# KINDS (default none,spin: 12 processes keeping CPUs busy at nice 10) of scripts/bench_neighbours.py.
source "$(dirname "$0")/common.sh"
timeout "${NEIGHBOURS_TIMEOUT:-150}" python scripts/bench_neighbours.py --kinds "${KINDS:-none,spin}" \
  --count 12 -- --device cuda --profile nightly --cases 100 --fresh 2>&1 | tee "$OUT/neighbours.md"
