"""Merge the outputs of shard campaigns (`moe-lora-fuzz run --shard i/n --out DIR_i`, on any hosts) into one.

    moe-lora-fuzz merge DIR... --out DIR

- report.json: cases, kinds and coverage (knobs, edges, combinations) summed; missing_edges recomputed;
  findings deduplicated by signature (counts summed, every shard's repro listed); elapsed_s is the longest
  shard (they run side by side), shard_seconds their sum, cases_per_s the aggregate rate; per_shard keeps
  each shard's summary; root_causes from fuzz.triage when that module is present.
- Repro files (every *.json of a shard directory besides report.json) are copied, never overwritten: a
  name already taken by different content gets a `-shard<i>` suffix (then a counter); identical content is
  reused. Paths inside the merged report point at the copies.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from collections import Counter
from pathlib import Path

from .coverage import REQUIRED_EDGES
from .repro import dumps, write_atomic


class MergeError(ValueError):
    """An input that cannot be merged; the message names the directory and the rule (exit 2)."""


def report_paths(directory: Path) -> list[Path]:
    """The campaign reports in a directory: report.json, or one report-shardIofN.json per shard that wrote
    there (shards may share a directory)."""
    if not Path(directory).is_dir():
        raise MergeError(f"{directory}: not a directory (a campaign's --out holds its report.json)")
    paths = sorted(Path(directory).glob("report-shard*.json")) or [Path(directory) / "report.json"]
    if not paths[0].is_file():
        raise MergeError(f"{directory}: no report.json (not a campaign's --out directory)")
    return paths


def load_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MergeError(f"{path}: unreadable JSON ({e})") from None
    fields = (("cases", int), ("kinds", dict), ("findings", list), ("coverage", dict), ("elapsed_s", (int, float)))
    for key, kind in fields:
        if not isinstance(report.get(key), kind):
            raise MergeError(f"{path}: field {key!r} missing or not a {getattr(kind, '__name__', 'number')}")
    return report


def _copy_files(src_dir: Path, out: Path, tag: str) -> dict:
    """Copy src_dir's repro files into out without overwriting; returns {source name: new path}."""
    moved = {}
    for src in sorted(src_dir.glob("*.json")):
        if src.name.startswith("report") or not src.is_file():
            continue
        dest, n = out / src.name, 0
        while dest.exists() and not filecmp.cmp(src, dest, shallow=False):
            n += 1
            dest = out / f"{src.stem}-{tag}{'' if n == 1 else f'-{n}'}{src.suffix}"
        if not dest.exists():
            shutil.copyfile(src, dest)
        moved[src.name] = dest
    return moved


def _remap(path: str | None, moved: dict) -> str | None:
    """A path recorded by a shard (absolute, or relative to where it ran) -> its copy, by file name."""
    if not path:
        return path
    name = Path(path).name
    return str(moved[name]) if name in moved else path


def _root_causes(reports: list[dict]) -> list | None:
    # ---- HOOK: root causes ------------------------------------------------------------------------
    # fuzz.triage (issue 13) groups findings into root causes: group_reports(reports) -> list of causes,
    # reading each finding's "triage" entry (paths already remapped to the merged copies). Absent: None.
    try:
        from . import triage
    except ImportError:
        return None
    group = getattr(triage, "group_reports", None)
    return group(reports) if callable(group) else None


def merge_reports(dirs: list[Path], out: Path) -> dict:
    """Merge the campaigns in `dirs` into `out` (created if needed); returns the merged report, also
    written to out/report.json."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise MergeError("merge: give at least one campaign directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MergeError(f"--out {out}: exists and is not a directory")
    for d in dirs:
        if d.resolve() == out.resolve():
            raise MergeError(f"--out {out}: is also an input; merge into a new directory")
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise MergeError("merge: a directory is given twice (its cases would count twice)")
    sources = [(d, p) for d in dirs for p in report_paths(d)]
    reports = [load_report(p) for _, p in sources]
    out.mkdir(parents=True, exist_ok=True)
    copied: dict = {}  # directory -> {file name: its copy}, each directory copied once

    kinds, edges, classes, knobs = Counter(), Counter(), Counter(), {}
    findings: dict = {}
    per_shard, shard_reports = [], []
    for i, ((d, _path), r) in enumerate(zip(sources, reports, strict=True)):
        shard = r.get("shard", [i, len(sources)])
        if d not in copied:
            copied[d] = _copy_files(d, out, f"shard{shard[0] if isinstance(shard, list) and shard else i}")
        moved = copied[d]
        kinds.update(r["kinds"])
        cov = r["coverage"]
        edges.update(cov.get("edges", {}))
        classes.update(cov.get("combinations", {}))
        for k, v in cov.get("knobs", {}).items():
            knobs.setdefault(k, Counter()).update(v)
        remapped = []
        for f in r["findings"]:
            f = dict(f, repro=_remap(f.get("repro"), moved), shard_dir=str(d))
            if isinstance(f.get("triage"), dict):
                f["triage"] = dict(f["triage"], minimal_repro=_remap(f["triage"].get("minimal_repro"), moved))
            remapped.append(f)
            sig = f.get("signature", f.get("kind", "?"))
            if sig in findings:
                findings[sig]["count"] += f.get("count", 1)
                findings[sig]["repros"].append(f["repro"])
            else:
                findings[sig] = dict(f, count=f.get("count", 1), repros=[f["repro"]])
        shard_reports.append(dict(r, findings=remapped))
        per_shard.append(
            {
                "dir": str(d),
                "shard": shard,
                "host": r.get("environment", {}).get("host"),
                "gpu": r.get("environment", {}).get("gpu"),
                "cases": r["cases"],
                "elapsed_s": r["elapsed_s"],
                "cases_per_s": r.get("cases_per_s"),
                "kinds": r["kinds"],
                "distinct_findings": len(r["findings"]),
                "copied_files": len(moved),
                "precompile": r.get("precompile", {}),
            }
        )

    cases = sum(r["cases"] for r in reports)
    wall = max(r["elapsed_s"] for r in reports)
    phases: dict = {}  # fuzz.phases, summed over the shards
    for r in reports:
        for k, v in r.get("phases", {}).items():
            t = phases.setdefault(k, {"s": 0.0, "n": 0})
            t["s"], t["n"] = round(t["s"] + v["s"], 3), t["n"] + v["n"]
    noop = sum(r["coverage"].get("noop_share", 0.0) * r["cases"] for r in reports) / max(cases, 1)

    def same(key):
        values = [r.get(key) for r in reports]
        return values[0] if all(v == values[0] for v in values) else values

    merged = {
        "merged_from": len(reports),
        "impl": same("impl"),
        "device": same("device"),
        "profile": same("profile"),
        "seed": same("seed"),
        "cases": cases,
        "elapsed_s": wall,
        "shard_seconds": round(sum(r["elapsed_s"] for r in reports), 2),
        "cases_per_s": round(cases / wall, 3) if wall > 0 else 0.0,
        "kinds": dict(kinds),
        "distinct_findings": len(findings),
        "findings": list(findings.values()),
        "worker_restarts": sum(r.get("worker_restarts", 0) for r in reports),
        "coverage": {
            "knobs": {k: dict(v) for k, v in sorted(knobs.items())},
            "edges": dict(edges),
            "missing_edges": [e for e in REQUIRED_EDGES if not edges[e]],
            "combinations": dict(classes),
            "noop_share": round(noop, 4),
        },
        "phases": dict(sorted(phases.items())),
        "per_shard": per_shard,
        "environment": reports[0].get("environment", {}),
    }
    shards = [tuple(p["shard"]) for p in per_shard if isinstance(p["shard"], list)]
    counts = {s[1] for s in shards if len(s) == 2}
    if len(counts) == 1 and len(set(shards)) == len(shards):
        n = counts.pop()
        merged["missing_shards"] = sorted(set(range(n)) - {s[0] for s in shards})
    causes = _root_causes(shard_reports)
    if causes is not None:
        merged["root_causes"] = causes
    write_atomic(out / "report.json", dumps(merged, indent=2) + "\n")
    return merged


def summary(merged: dict, out: Path) -> str:
    line = (
        f"{merged['merged_from']} shard(s): {merged['cases']} cases in {merged['elapsed_s']:.0f}s "
        f"({merged['cases_per_s']}/s), {merged['distinct_findings']} distinct findings"
    )
    if "root_causes" in merged:
        line += f", {len(merged['root_causes'])} root causes"
    if merged.get("missing_shards"):
        line += f"; missing shards {merged['missing_shards']}"
    return line + f"; missing edges {merged['coverage']['missing_edges']}; report: {Path(out) / 'report.json'}"
