"""Triage after the campaign: `moe-lora-fuzz triage DIR...` minimises the findings of finished campaigns that
have none yet and groups them all (`triage_dirs`); `seed_triage` keeps the triage a resumed campaign already
did. Builds on fuzz.triage.triager.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.triage.explain import TRIAGE_CAP_S
from moe_lora_fuzz.fuzz.triage.grouping import group_reports
from moe_lora_fuzz.fuzz.triage.intermittent import settle
from moe_lora_fuzz.fuzz.triage.triager import Triager, WorkerJudge


# ---- offline: moe-lora-fuzz triage DIR... ------------------------------------------------------------------
class TriageError(Exception):
    """A directory or report that cannot be triaged (usage error, exit 2)."""


def _repro_path(raw: str, directory: Path) -> Path:
    p = Path(raw)
    return p if p.is_file() else directory / p.name


def _settled(finding: dict) -> bool:
    """Triaged and explained: offline triage leaves it alone (the rest are triaged again)."""
    info = finding.get("triage")
    return bool(info) and "|not explained: " not in info["key"] and not info["via"].startswith("provisional")


def _opened_a_cause(info: dict) -> bool:
    """Minimised into a new root key (not attached, not explained by a cause found before it)."""
    return info["via"].startswith("minimised") and "explained by" not in info["via"]


def triage_dirs(
    dirs: list[Path],
    *,
    device: str | None = None,
    cap: float | None = None,
    impl: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Triage every finding of the finished campaigns in `dirs` that has no triage yet (minimal repro files
    go next to the raw ones), then group all of them. Returns (reports, root_causes), each report with its
    file in "_path"; writes nothing. `impl` re-runs the findings; without it only our own code is run (a
    report that names an external implementation is refused: a file never chooses code to run)."""
    from moe_lora_fuzz.fuzz.records.outdir import MergeError, report_paths
    from moe_lora_fuzz.fuzz.records.repro import ReproError, load

    reports, where = [], []
    for d in dirs:
        try:
            paths = report_paths(Path(d))
        except MergeError as e:
            raise TriageError(str(e)) from None
        for path in paths:
            from moe_lora_fuzz.fuzz.records.outdir import ReportError, read_report

            try:  # checked field by field (fuzz.records.outdir): a damaged report is one error line
                reports.append(dict(read_report(path), _path=str(path)))
            except ReportError as e:
                raise TriageError(str(e)) from None
            if not isinstance(reports[-1].get("impl"), str) or reports[-1].get("device", "cpu") not in ("cpu", "cuda"):
                raise TriageError(f"{path}: field 'impl' or 'device' missing or not one campaign's")
            where.append(d)
    for d, report in zip(where, reports, strict=True):
        todo = [f for f in report["findings"] if not _settled(f)]
        if not todo:
            continue
        dev = device or report.get("device", "cpu")
        from moe_lora_fuzz.fuzz.execution.worker import Worker
        from moe_lora_fuzz.fuzz.records.repro import is_builtin

        run_impl = impl or report["impl"]
        if impl is None and not is_builtin(run_impl):
            raise TriageError(
                f"{report['_path']}: names the external implementation {report['impl']!r}, and a file "
                f"never chooses code to run; pass --impl {report['impl']} if you trust it"
            )
        triager = Triager(run_impl, dev, Path(d), report.get("environment", {}))
        # causes already found in this report are known causes for the rest
        triager.causes = [f["triage"] for f in report["findings"] if _settled(f) and _opened_a_cause(f["triage"])]
        # every minimal form they were reached through (a cause joined from several forms attaches by their core)
        triager.reps = [
            f["triage"] for f in report["findings"] if _settled(f) and f["triage"]["via"].startswith("minimised")
        ]
        judge = WorkerJudge(Worker(dev, run_impl), dev, run_impl)
        try:
            for f in todo:
                try:
                    repro = load(_repro_path(f["repro"], Path(d)))
                except ReproError as e:
                    raise TriageError(str(e)) from None
                judge.metamorphic = f["kind"] == "metamorphic"  # the twins are what found it
                vd = judge(repro.case)  # judged again: the file may be edited, the implementation changed
                if not family(vd["kind"]):  # fixed, or intermittent (fuzz.triage.intermittent)
                    target = {"kind": f["kind"], "failure": repro.verdict.failure}
                    settle(triager, f, repro.case, target, judge, cap or TRIAGE_CAP_S[dev], fails=0, runs=1)
                    continue
                triager.triage(f, repro.case, vd, judge, cap or TRIAGE_CAP_S[dev])
                if progress:
                    progress(f"{f['repro']}: {(f.get('triage') or {}).get('trigger', 'not reproduced')}")
        finally:
            judge.worker.close()
    return reports, group_reports(reports)


def seed_triage(triage, report) -> None:
    """Keep triage already done when resuming: findings the previous session explained are known causes."""
    settled = [f for f in report.findings.values() if f.get("triage") and _settled(f)]
    if not settled:
        return
    triage.triager = Triager(report.cfg.impl, report.cfg.device, report.cfg.out, report.env)
    triage.triager.causes = [f["triage"] for f in settled if _opened_a_cause(f["triage"])]
    triage.triager.reps = [f["triage"] for f in settled if f["triage"]["via"].startswith("minimised")]
