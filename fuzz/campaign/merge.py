"""Merge the outputs of shard campaigns (`moe-lora-fuzz run --shard i/n --out DIR_i`, on any hosts) into one.

    moe-lora-fuzz merge DIR... --out DIR

- report.json: cases, kinds and coverage (knobs, edges, combinations) summed; missing_edges recomputed;
  findings deduplicated by signature (counts summed, every shard's repro listed); elapsed_s is the longest
  shard (they run side by side), shard_seconds their sum, cases_per_s the aggregate rate; per_shard keeps
  each shard's summary; root_causes from fuzz.triage.triager when that module is present.
- Repro files (every *.json of a shard directory besides report.json) are copied, never overwritten: a
  name already taken by different content gets a `-shard<i>` suffix (then a counter); identical content is
  reused. Paths inside the merged report point at the copies. Only regular files are copied (a symlink, a
  device or a FIFO is skipped and listed under "skipped"), each atomically (a temporary file renamed).
- Every repro file on disk counts: a `repro-*.json` that no report of its directory lists (its campaign was
  killed before the report caught up) is read and merged as a finding of its own (fuzz.records.outdir).
- Nothing is written before every input has been read and checked field by field (fuzz.records.outdir.check_report):
  a damaged or hostile input is one MergeError naming the file and the field, and --out is left untouched.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

from moe_lora_fuzz.fuzz.records import outdir
from moe_lora_fuzz.fuzz.records.outdir import MergeError, report_paths  # noqa: F401 (the CLI, scripts and tests import them from here)
from moe_lora_fuzz.fuzz.records.repro import dumps, write_atomic
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES

MAX_COPY_BYTES = 16 << 20  # repro and minimal files are a few KB


def load_report(path: Path) -> dict:
    """A shard's report, checked field by field for everything merging reads."""
    try:
        report = outdir.require(outdir.read_report(path), path, "cases", "kinds")
        outdir._need(report, "elapsed_s", (int, float), path)
        outdir._need(report, "coverage", dict, path)
    except outdir.ReportError as e:
        raise MergeError(str(e)) from None
    return report


def _read_regular(src: Path) -> bytes | None:
    """The bytes of a regular file (never through a symlink; a device or FIFO is not opened); None otherwise."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # a symlink (ELOOP), or gone
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > MAX_COPY_BYTES:
            raise MergeError(f"{src}: larger than {MAX_COPY_BYTES} bytes; not a repro file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_COPY_BYTES + 1)
    finally:
        os.close(fd)


def _plan_copies(src_dir: Path, skipped: list) -> list[tuple[str, bytes]]:
    """src_dir's files to copy (every *.json besides its reports), read now: nothing is written before every
    input was read. Non-regular files go to `skipped`."""
    files = []
    for src in sorted(src_dir.glob("*.json")):
        if src.name.startswith("report"):
            continue
        data = _read_regular(src)
        if data is None:
            skipped.append(str(src))
        else:
            files.append((src.name, data))
    return files


def _copy_files(files: list, out: Path, tag: str) -> dict:
    """Write `files` into out without overwriting (identical content is reused), each atomically; returns
    {source name: new path}."""
    moved = {}
    for name, data in files:
        stem, suffix = name[: -len(".json")], ".json"
        dest, n = out / name, 0
        while os.path.lexists(dest) and _read_regular(dest) != data:
            n += 1
            dest = out / f"{stem}-{tag}{'' if n == 1 else f'-{n}'}{suffix}"
        if not os.path.lexists(dest):
            write_atomic(dest, data)
        moved[name] = dest
    return moved


def _remap(path: str | None, moved: dict) -> str | None:
    """A path recorded by a shard (absolute, or relative to where it ran) -> its copy, by file name."""
    if not path:
        return path
    name = Path(path).name
    return str(moved[name]) if name in moved else path


def _root_causes(reports: list[dict]) -> list | None:
    # ---- HOOK: root causes ------------------------------------------------------------------------
    # fuzz.triage.triager (issue 13) groups findings into root causes: group_reports(reports) -> list of causes,
    # reading each finding's "triage" entry (paths already remapped to the merged copies). Absent: None.
    try:
        from moe_lora_fuzz.fuzz.triage import triager as triage
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
    skipped: list = []
    planned = {d: _plan_copies(d, skipped) for d in dict.fromkeys(d for d, _ in sources)}
    _recover(sources, reports)
    try:
        out.mkdir(parents=True, exist_ok=True)
        merged = _merge(sources, reports, planned, out)
        merged["skipped"] = skipped
        write_atomic(out / "report.json", dumps(merged, indent=2) + "\n")
    except OSError as e:
        raise MergeError(
            f"--out {out}: cannot write ({e.strerror or e}); the merged report.json was not written (files "
            "copied so far are complete copies; run merge again into a fresh directory)"
        ) from None
    return merged


def _recover(sources: list, reports: list) -> None:
    """Repro files no report of their directory lists become findings of that directory's first report."""
    first: dict = {}
    for (d, _p), r in zip(sources, reports, strict=True):
        first.setdefault(d, []).append(r)
    for d, rs in first.items():
        listed = [f for r in rs for f in r["findings"]]
        try:
            extra = outdir.findings_on_disk(d, listed, None, set())
        except outdir.ReportError as e:
            raise MergeError(str(e)) from None
        rs[0]["findings"] = rs[0]["findings"] + extra


def _merge(sources: list, reports: list, planned: dict, out: Path) -> dict:
    copied: dict = {}  # directory -> {file name: its copy}, each directory copied once

    kinds, edges, classes, knobs = Counter(), Counter(), Counter(), {}
    findings: dict = {}
    per_shard, shard_reports = [], []
    for i, ((d, _path), r) in enumerate(zip(sources, reports, strict=True)):
        shard = r.get("shard", [i, len(sources)])
        if d not in copied:
            copied[d] = _copy_files(planned[d], out, f"shard{shard[0] if isinstance(shard, list) and shard else i}")
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
    phases: dict = {}  # fuzz.runtime.phases, summed over the shards
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
    if merged.get("skipped"):
        line += f"; {len(merged['skipped'])} file(s) skipped (not regular files: symlinks, devices)"
    return line + f"; missing edges {merged['coverage']['missing_edges']}; report: {Path(out) / 'report.json'}"
