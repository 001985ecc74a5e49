#!/usr/bin/env bash
# issue30q.sh's timings alone (about 105 s), for a combined call: first waits (at most WAIT_FOR_S, default 120 s)
# until the step named in WAIT_FOR (e.g. 29a, running alongside) has written its summary, so nothing else runs on
# the GPU while it times.
for _ in $(seq "${WAIT_FOR_S:-120}"); do
  [ -z "${WAIT_FOR:-}" ] || [ -f "$OUT/../issue$WAIT_FOR/summary.txt" ] && break
  sleep 1
done
PART=bench exec bash "$(dirname "$0")/issue30q.sh"
