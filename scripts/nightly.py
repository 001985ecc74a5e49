"""Nightly campaign: one worker process per GPU on disjoint deterministic shards, one merged report.

    python scripts/nightly.py --budget 3600 --out nightly-out [--gpus N] [--impl ours] [--seed S]

Each GPU i runs `python -m fuzz run --profile nightly --shard i/N` with CUDA_VISIBLE_DEVICES=i; the
shards' reports are merged into OUT/report.json (findings deduplicated by signature). Exit 1 on findings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def merge(reports: list[dict]) -> dict:
    kinds, findings, edges, classes = Counter(), {}, Counter(), Counter()
    knobs: dict[str, Counter] = {}
    for r in reports:
        kinds.update(r["kinds"])
        for f in r["findings"]:
            if f["signature"] in findings:
                findings[f["signature"]]["count"] += f["count"]
            else:
                findings[f["signature"]] = dict(f)
        edges.update(r["coverage"]["edges"])
        classes.update(r["coverage"]["combinations"])
        for k, v in r["coverage"]["knobs"].items():
            knobs.setdefault(k, Counter()).update(v)
    from fuzz.coverage import REQUIRED_EDGES
    cases = sum(r["cases"] for r in reports)
    wall = max(r["elapsed_s"] for r in reports)
    return {"shards": len(reports), "cases": cases, "elapsed_s": wall, "cases_per_s": round(cases / wall, 2),
            "kinds": dict(kinds), "distinct_findings": len(findings), "findings": list(findings.values()),
            "coverage": {"edges": dict(edges), "missing_edges": [e for e in REQUIRED_EDGES if not edges[e]],
                         "combinations": dict(classes), "knobs": {k: dict(v) for k, v in knobs.items()}},
            "per_shard": [{k: r[k] for k in ("shard", "cases", "cases_per_s", "kinds")} for r in reports],
            "environment": reports[0]["environment"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=3600)
    p.add_argument("--out", type=Path, default=Path("nightly-out"))
    p.add_argument("--gpus", type=int, default=None, help="default: every visible GPU")
    p.add_argument("--impl", default="ours")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out = a.out.resolve()  # the shards run with cwd = the repository root
    import torch
    n = a.gpus or torch.cuda.device_count()
    if n < 1:
        print("error: no CUDA GPU visible; the nightly campaign runs on GPUs", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYPOTHESIS_PROFILE="nightly")
    env.pop("TRITON_INTERPRET", None)
    a.out.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-m", "fuzz", "run", "--device", "cuda", "--profile", "nightly", "--impl", a.impl,
               "--budget", str(a.budget), "--seed", str(a.seed), "--shard", f"{i}/{n}",
               "--out", str(a.out / f"shard{i}")]
        log = open(a.out / f"shard{i}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=dict(env, CUDA_VISIBLE_DEVICES=str(i)), stdout=log,
                                      stderr=subprocess.STDOUT))
    codes = [pr.wait() for pr in procs]
    if any(c == 2 for c in codes):
        print(f"error: a shard failed to start (exit codes {codes}); see {a.out}/shard*.log", file=sys.stderr)
        return 2
    merged = merge([json.loads((a.out / f"shard{i}" / f"report-shard{i}of{n}.json").read_text()) for i in range(n)])
    (a.out / "report.json").write_text(json.dumps(merged, indent=2) + "\n")
    print(f"{n} GPUs, {merged['cases']} cases in {merged['elapsed_s']:.0f}s ({merged['cases_per_s']}/s), "
          f"{merged['distinct_findings']} distinct findings; kinds {merged['kinds']}; "
          f"missing edges {merged['coverage']['missing_edges']}")
    return 1 if merged["findings"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
