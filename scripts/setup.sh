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
# A headless browser for tests/test_report_views.py (it renders report.html): Debian's chromium, when apt is usable
# (root, apt-get present, the mirror reachable); otherwise that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium (apt; tests/test_report_views.py renders report.html in it)" >&2
  if ! (timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq chromium >/dev/null); then
    echo "setup: chromium not installed (apt failed); the browser test will skip" >&2
  fi
fi
