"""One case of a campaign, after the worker judged it: the judgement timed into the report's phases, a
finding recorded (its repro file, named by campaign and signature so that nothing is overwritten, and a fresh
report.json), and the console's lines. Used by the campaign loop (fuzz.campaign.runner) and the corpus replay.
"""

from __future__ import annotations

import hashlib
import sys
import time

from moe_lora_fuzz.fuzz.execution.worker import CampaignConfig, Worker
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict
from moe_lora_fuzz.fuzz.outputs.campaign_record import Report, saving
from moe_lora_fuzz.fuzz.records.outdir import OutputError
from moe_lora_fuzz.fuzz.records.repro import Repro, dumps, save
from moe_lora_fuzz.fuzz.runtime import phases
from moe_lora_fuzz.fuzz.space.case import Case


def _judge_timed(worker: Worker, report: Report, case: Case, **kw) -> Verdict:
    """worker.judge, with the worker's phases added to the report's and the rest of the round trip (pickling,
    the pipe, a restart) as `ipc`; a case the worker never answered (a hang, a crash, a case the budget cut: no
    phases) as `unanswered`, which is not the pipe's time."""
    t0 = time.perf_counter()
    v = worker.judge(case, **kw)
    wall = time.perf_counter() - t0
    timed = getattr(worker, "phases", None)  # stand-in workers (tests) time nothing
    rest = "unanswered" if timed == {} else "ipc"
    timed = timed or {}
    phases.add(report.phases, timed)
    phases.add(report.phases, {rest: [wall - sum(s for s, _ in timed.values()), 1]})
    return v


def repro_name(cfg: CampaignConfig, v: Verdict) -> str:
    """Unique per campaign and signature: no campaign, shard or resumed run overwrites another's repro."""
    return f"repro-{cfg.campaign_id}-{v.kind}-{hashlib.sha1(v.signature.encode()).hexdigest()[:8]}.json"


def _record(cfg: CampaignConfig, report: Report, case: Case, index: int, v: Verdict) -> bool:
    """Count a finding; a new signature also gets its repro file and a fresh report.json. Returns whether
    it was new. A finding whose repro file cannot be written is printed whole to stderr (OutputError)."""
    sig = v.signature
    if sig in report.findings:
        report.findings[sig]["count"] += 1
        return False
    path = cfg.out / repro_name(cfg, v)
    repro = Repro(case, cfg.impl, cfg.device, v, report.env, cfg.timeout, cfg.campaign_id)
    line = _finding_line(cfg, v, path)
    try:
        with saving(report, f"the repro file {path.name} of a new finding (NOT saved: printed above)"):
            save(repro, path)
    except OutputError:  # never only in memory: the whole repro file goes to the console
        report.notes.append(f"finding {sig} (case {index}) NOT saved: its repro file was printed to the console")
        print(f"{line}\nUNSAVED FINDING, its repro file:\n{dumps(repro.to_dict(str(path)), indent=2)}", file=sys.stderr)
        raise
    report.findings[sig] = {
        "signature": sig,
        "kind": v.kind,
        "count": 1,
        "case_index": index,
        "message": v.message,
        "repro": str(path.resolve()),
    }
    report.write()
    return True


def _finding_line(cfg: CampaignConfig, v: Verdict, path) -> str:
    """The console's announcement of a finding (printed once saved, for a finding that opens a new root cause;
    the others are counted in the progress line and listed in report.json)."""
    return f"FINDING {v.kind}: {v.message[:160]}\n  REPRO: moe-lora-fuzz replay {path} --impl {cfg.impl}"


def _progress(report: Report, left: float) -> None:
    elapsed = time.time() - report.started
    print(
        f"[{elapsed:7.1f}s] cases {report.cases} ({report.cases / max(elapsed, 1e-9):.2f}/s) "
        f"findings {len(report.findings)} root causes {len(report.root_causes)} | {max(left, 0):.0f}s left",
        file=sys.stderr,
        flush=True,
    )
