"""The campaign's record: counts, findings, coverage and notes, and report.json written from them atomically.

`Report.write` is the one way report.json reaches the disk; an OSError there (and in any output write wrapped
in `saving`) becomes fuzz.records.outdir.OutputError, whose message says what was saved so far and what was not.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from moe_lora_fuzz.fuzz import __version__
from moe_lora_fuzz.fuzz.outputs.report_views import write_views
from moe_lora_fuzz.fuzz.records import outdir
from moe_lora_fuzz.fuzz.records.outdir import OutputError
from moe_lora_fuzz.fuzz.records.repro import dumps, environment, write_atomic
from moe_lora_fuzz.fuzz.runtime import phases
from moe_lora_fuzz.fuzz.space.coverage import Coverage
from moe_lora_fuzz.fuzz.upstream.trace import summary as upstream_summary


@dataclass
class Report:
    cfg: object  # fuzz.campaign.runner.CampaignConfig
    started: float = field(default_factory=time.time)
    cases: int = 0
    metamorphic_cases: int = 0
    next_index: int | None = None
    kinds: Counter = field(default_factory=Counter)
    findings: dict = field(default_factory=dict)  # signature -> summary
    coverage: Coverage = field(default_factory=Coverage)
    crashes: int = 0  # worker restarts
    interrupted: str | None = None  # the signal that ended the campaign
    sanitizer: dict = field(default_factory=lambda: {"runs": 0, "errors": []})
    env: dict = field(default_factory=environment)  # read once: on a GPU it runs nvidia-smi
    previous: list = field(default_factory=list)  # campaigns this one resumed
    root_causes: list = field(default_factory=list)  # fuzz.triage.triager fills these two
    triage: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # fuzz.runtime.phases: {path: [seconds, count]}, worker's and ours
    precompile: dict = field(default_factory=dict)  # fuzz.campaign.precompile's helpers: processes, cases, restarts
    notes: list = field(
        default_factory=list
    )  # what the campaign did besides cases (fuzz.records.outdir, fuzz.campaign.budget)
    owned: bool = False  # set once a resumed report is carried over: writing before that would replace it
    saved_cases: int | None = None  # `cases` in the last report.json that reached the disk
    saved_findings: int = 0  # and how many findings it listed
    written: float = 0.0  # time.monotonic() of that write
    harness_error: str | None = None  # a stand-in gap met by a case (verdict harness-error): the campaign stopped
    impl_settings: dict = field(default_factory=dict)  # the implementation's declared settings (worker.profile)
    extra: dict = field(
        default_factory=dict
    )  # more top-level report keys (steering, corpus: fuzz.campaign.steer, .corpus); a callable is called at to_dict

    def to_dict(self) -> dict:
        c = self.cfg
        elapsed = time.time() - self.started
        return {
            "campaign": c.campaign_id,
            "harness": __version__,
            "commit": self.env.get("commit"),
            "impl": c.impl,
            "device": c.device,
            "profile": c.profile,
            "seed": c.seed,
            "shard": list(c.shard),
            "budget_s": c.budget,
            "case_timeout_s": c.timeout,
            "elapsed_s": round(elapsed, 2),
            "interrupted": self.interrupted,
            "cases": self.cases,
            "metamorphic_cases": self.metamorphic_cases,
            "next_index": self.next_index,
            "cases_per_s": round(self.cases / max(elapsed, 1e-9), 3),
            "kinds": dict(self.kinds),
            "distinct_findings": len(self.findings),
            "root_causes": self.root_causes,
            "triage": self.triage,
            "findings": list(self.findings.values()),
            "worker_restarts": self.crashes,
            "sanitizer": self.sanitizer,
            "resumed": self.previous,
            "coverage": self.coverage.to_dict(),
            "precompile": self.precompile,
            "notes": self.notes,
            "harness_error": self.harness_error,
            "upstream": upstream_summary(self.impl_settings, self.coverage.edges),
            "phases": {k: {"s": round(sv, 3), "n": n} for k, (sv, n) in sorted(self.phases.items())},
            "environment": self.env,
            **{k: v() if callable(v) else v for k, v in self.extra.items()},  # summaries: built per write, not per case
        }

    def write(self, every: float = 0.0) -> None:
        """Rewrite report.json atomically (`every`: unless it was written less than that many seconds ago).
        OutputError when the disk refuses it."""
        if every and time.monotonic() - self.written < every:
            return
        phases.add(self.phases, phases.take())  # this process's phases so far (the worker's come per case)
        d = self.to_dict()
        with saving(self, f"{self.cfg.report_path.name} (case {self.cases})"):
            write_atomic(self.cfg.report_path, dumps(d, indent=2) + "\n")
            write_views(self.cfg.report_path, d)  # report.html and report.md beside it (fuzz.outputs.report_views)
        self.saved_cases, self.saved_findings, self.written = self.cases, len(self.findings), time.monotonic()

    def resume_from(self, old: dict) -> None:
        """Carry a previous report's counts, findings (their triage too) and notes; its coverage is not merged
        (this session's only). `old` is checked by fuzz.records.outdir.previous_report."""
        self.cases = old["cases"]
        self.kinds.update(old["kinds"])
        self.findings = {f["signature"]: f for f in old["findings"]}
        self.next_index = old.get("next_index")
        self.previous = [*old.get("resumed", []), *([old["campaign"]] if old.get("campaign") else [])]
        self.notes = [n for n in old.get("notes", []) if isinstance(n, str)] + self.notes
        recovered = sum(1 for f in old["findings"] if "recovered from its repro file" in (f.get("triage_note") or ""))
        if recovered:
            self.notes.append(f"resume: {recovered} finding(s) recovered from repro files the report did not list")


class saving:
    """Turn an OSError while writing outputs into OutputError saying what was and was not saved."""

    def __init__(self, report: Report, what: str):
        self.report, self.what = report, what

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if typ is None or not issubclass(typ, OSError):
            return False
        r = self.report
        saved = outdir.saved_so_far(r.cfg.out, r.saved_cases, r.saved_findings)
        raise OutputError(f"--out {r.cfg.out}: cannot write {self.what} ({e.strerror or e}); {saved}") from None
