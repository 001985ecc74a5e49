"""Compatibility matrix: every release of SGLang / vLLM whose wheel ships the fused MoE LoRA kernel, newest
first, loaded and fuzzed for a short CPU campaign (`tox -e upstream`; needs the package index once, then the
cache of fuzz/upstream/releases.py).

    python scripts/release_matrix.py --per-framework 6 --budget 25 --out matrix-out

For each release: fetch (range requests into $MOE_LORA_FUZZ_CACHE), run `--impl FW==VERSION --device cpu`,
read its report.json: loads, harness error, wrapper branches reached / missing, root causes. Releases whose
wheel has no such kernel are skipped (older ones); `--also` adds versions by hand (e.g. one from before an
upstream fix). Writes OUT/matrix.json and OUT/matrix.md (the table of docs/upstream.md); exit 1 if any
release failed to load or met a harness error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _releases():
    sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("TRITON_INTERPRET", "1")
    from moe_lora_fuzz.fuzz.upstream import releases

    return releases


def run_one(framework: str, version: str, budget: float, out: Path, seed: int) -> dict:
    releases = _releases()
    row = {"framework": framework, "version": version}
    t0 = time.monotonic()
    try:
        rel = releases.fetch(framework, version)
    except releases.ReleaseError as e:
        row.update(ships_kernel="ships no" not in str(e) and None, error=str(e))
        if "ships no" in str(e):
            row["ships_kernel"] = False
        return row
    row.update(ships_kernel=True, kernel=str(rel.kernel.relative_to(rel.root)), fetch_s=round(time.monotonic() - t0, 1))
    d = out / f"{framework}-{version}"
    cmd = [sys.executable, "-m", "moe_lora_fuzz.fuzz", "run", "--impl", f"{framework}=={version}"]
    cmd += ["--device", "cpu", "--budget", str(budget), "--seed", str(seed), "--out", str(d)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    row["exit"] = p.returncode
    try:
        rep = json.loads((d / "report.json").read_text())
    except (OSError, ValueError):
        row.update(loads=False, error=(p.stderr.strip().splitlines() or ["no report"])[-1])
        return row
    up = rep.get("upstream") or {}
    row.update(
        loads=True,
        harness_error=rep.get("harness_error"),
        cases=rep["cases"],
        branches=sorted(b for b in up.get("branches", {}) if "+" not in b),
        paths=sorted(b for b in up.get("branches", {}) if "+" in b),
        missing_edges=up.get("missing_edges", []),
        standins=len(up.get("standins", [])),
        root_causes=[f"{rc['kind']}: {rc['trigger'][:100]}" for rc in rep.get("root_causes", [])],
    )
    return row


def _env():
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_INTERPRET="1")
    return env


def table(rows: list[dict]) -> str:
    lines = [
        "| release | loads | branches reached (of declared) | never reached | cases | root causes | harness error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.get("ships_kernel"):
            continue
        if not r.get("loads"):
            lines.append(f"| {r['framework']} {r['version']} | no: {r.get('error', '')[:80]} | | | | | |")
            continue
        short = lambda names: ", ".join(n.replace("_fused_moe_lora", "").strip("_") or n for n in names) or "-"
        causes = "; ".join(r["root_causes"]) or "none"
        lines.append(
            f"| {r['framework']} {r['version']} | yes | {short(r['branches'])} | {short(r['missing_edges'])} "
            f"| {r['cases']} | {len(r['root_causes'])}: {causes} | {r['harness_error'] or 'none'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frameworks", default="vllm,sglang")
    ap.add_argument("--per-framework", type=int, default=6, help="releases with the kernel, newest first")
    ap.add_argument("--also", default="", help="extra FW==VERSION entries, comma-separated")
    ap.add_argument("--budget", type=float, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("matrix-out"))
    ap.add_argument("--fetch-only", action="store_true", help="only fill the cache with the --also releases")
    a = ap.parse_args(argv)
    releases = _releases()
    if a.fetch_only:
        for spec in filter(None, a.also.split(",")):
            fw, _, v = spec.partition("==")
            rel = releases.fetch(fw, v)
            print(f"{spec}: {rel.kernel.relative_to(releases.cache_root())}")
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    todo = [tuple(x.split("==")) for x in a.also.split(",") if x]
    for fw in a.frameworks.split(","):
        found = 0
        for v in releases.released_versions(fw):
            if found >= a.per_framework:
                break
            row = run_one(fw, v, a.budget, a.out, a.seed)
            print(json.dumps(row), flush=True)
            if row.get("ships_kernel") is False:
                break  # older releases predate the kernel
            rows.append(row)
            found += bool(row.get("ships_kernel"))
    for fw, v in todo:
        if not any(r["framework"] == fw and r["version"] == v for r in rows):
            row = run_one(fw, v, a.budget, a.out, a.seed)
            print(json.dumps(row), flush=True)
            rows.append(row)
    (a.out / "matrix.json").write_text(json.dumps(rows, indent=1) + "\n")
    (a.out / "matrix.md").write_text(table(rows))
    print(table(rows))
    bad = [r for r in rows if r.get("ships_kernel") and (not r.get("loads") or r.get("harness_error"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
