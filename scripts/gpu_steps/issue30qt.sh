#!/usr/bin/env bash
# issue30q.sh's tests alone (about 100 s), for a combined call.
PART=tests exec bash "$(dirname "$0")/issue30q.sh"
