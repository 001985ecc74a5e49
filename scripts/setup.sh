#!/usr/bin/env bash
# Idempotent set-up, saying what it installs: torch first (the local CPU wheel; a bare "torch" requirement would
# pull a multi-GB CUDA build), then the package's dependencies and its test extra as pyproject.toml declares them
# (the one place their versions are written). A machine that has everything (the GPU machines) installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU wheel from local disk)" >&2
  pip install -q torch==2.13.0
fi
missing=$(python - <<'PY'
import tomllib
from importlib.metadata import PackageNotFoundError, version
meta = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = [r for r in meta["dependencies"] + meta["optional-dependencies"]["test"] if not r.startswith("torch")]
for req in reqs:
    name = req.split(">")[0].split("=")[0].split("<")[0].strip()
    try:
        version(name)
    except PackageNotFoundError:
        print(req)
PY
)
if [ -n "$missing" ]; then
  echo "setup: installing $(echo $missing | tr '\n' ' ')(pyproject.toml)" >&2
  echo "$missing" | xargs pip install -q
fi
