"""Time-budgeted campaigns: cases run in a worker process that is restarted when a case kills it.

Case i of a campaign is drawn from RandomSource(seed, i) over the shared knob space (fuzz.case), so a
campaign is reproducible and `--shard i/n` splits it into disjoint deterministic parts. Every distinct
finding (by signature) gets a repro file the moment it is found; report.json is rewritten as the campaign
goes, so nothing is lost if it is killed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .case import CPU_SIZES, GPU_SIZES, Case, RandomSource, generate
from .coverage import Coverage
from .oracle import Verdict, crash_failure, signature
from .repro import Repro, environment, save, write_atomic

CASE_TIMEOUT_S = {"cpu": 300.0, "cuda": 120.0}


@dataclass(frozen=True)
class CampaignConfig:
    impl: str = "ours"
    device: str = "cpu"
    budget: float = 120.0
    max_cases: int | None = None
    seed: int = 0
    out: Path = Path("fuzz-out")
    profile: str = "premerge"
    shard: tuple = (0, 1)  # (index, count)
    metamorphic_every: int = 4  # run the metamorphic twins on every Nth case (0: never)
    stop_after: int | None = None  # stop after this many distinct findings (benchmarks, quality tests)
    sanitize_every: int = 0  # GPU: replay every Nth case and every new finding under compute-sanitizer
    quiet: bool = False
    triage_share: float | None = None  # triage (fuzz.triage): share of the budget (None: 0.2; 0 with stop_after)
    triage_cap: float | None = None  # and seconds per finding (None: 30 on cpu, 20 on cuda)

    @property
    def sizes(self):
        return GPU_SIZES if (self.device == "cuda" and self.profile == "nightly") else CPU_SIZES


def case_for(cfg: CampaignConfig, index: int) -> Case:
    """The index-th case of the campaign: a pure function of (seed, index, device, profile)."""
    case_seed = (cfg.seed * 1_000_003 + index) % (2**63)
    return generate(RandomSource(case_seed), cfg.sizes, interpreter=cfg.device == "cpu", seed=case_seed)


# ---- the worker process ----------------------------------------------------------------------------
def _worker_main(conn, device: str, impl_name: str) -> None:
    # TRITON_INTERPRET is inherited from the parent (the CLI sets it for --device cpu before any import)
    from .impls import ImplError, resolve
    from .oracle import check
    try:
        impl = resolve(impl_name)
    except ImplError as e:
        conn.send({"fatal": str(e)})
        return
    conn.send({"ready": True})
    while True:
        msg = conn.recv()
        if msg is None:
            return
        case = Case.from_dict(msg["case"])
        if msg.get("mode") == "upstream":
            from .upstream_style import upstream_check
            ok, why = upstream_check(case, impl, device)
            kind = "pass" if ok else "mismatch"
            conn.send({"verdict": Verdict(kind, impl_name, signature(kind, impl_name, case) if not ok else "",
                                          why).to_dict()})
            continue
        try:
            v = check(case, impl_name, device, metamorphic=msg["metamorphic"], impl=impl, guards=msg["guards"])
        except Exception as e:  # outside the implementation: the process (e.g. its CUDA context) is broken
            conn.send({"dead": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            return
        conn.send({"verdict": v.to_dict()})


class WorkerDied(Exception):
    pass


class Worker:
    """One child process running the oracle; restarted by the caller after a crash or hang."""

    def __init__(self, device: str, impl: str):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, device, impl), daemon=True)
        self.proc.start()
        child.close()
        first = self._recv(600.0)
        if "fatal" in first:
            self.close()
            from .impls import ImplError
            raise ImplError(first["fatal"])

    def _recv(self, timeout: float) -> dict:
        if not self.conn.poll(timeout):
            raise WorkerDied(f"no answer within {timeout:.0f} s (hang)")
        try:
            return self.conn.recv()
        except (EOFError, ConnectionError):
            self.proc.join(5)
            raise WorkerDied(f"worker process died (exit code {self.proc.exitcode})") from None

    def run(self, case: Case, metamorphic: bool, timeout: float, mode: str = "fuzz", guards: bool = True) -> dict:
        try:
            self.conn.send({"case": case.to_dict(), "metamorphic": metamorphic, "mode": mode, "guards": guards})
        except (BrokenPipeError, ConnectionError):
            raise WorkerDied("worker process died before the case") from None
        answer = self._recv(timeout)
        if "dead" in answer:
            self.proc.join(5)
            raise WorkerDied(f"worker broke: {answer['dead']}")
        return answer["verdict"]

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, ConnectionError, OSError):
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# ---- the campaign ---------------------------------------------------------------------------------
@dataclass
class Report:
    cfg: CampaignConfig
    started: float = field(default_factory=time.time)
    cases: int = 0
    kinds: Counter = field(default_factory=Counter)
    findings: dict = field(default_factory=dict)  # signature -> summary
    coverage: Coverage = field(default_factory=Coverage)
    crashes: int = 0
    sanitizer: dict = field(default_factory=lambda: {"runs": 0, "errors": []})
    env: dict = field(default_factory=environment)  # read once: on a GPU it runs nvidia-smi
    root_causes: list = field(default_factory=list)  # fuzz.triage fills these two
    triage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        c = self.cfg
        elapsed = time.time() - self.started
        return {"impl": c.impl, "device": c.device, "profile": c.profile, "seed": c.seed,
                "shard": list(c.shard), "budget_s": c.budget, "elapsed_s": round(elapsed, 2),
                "cases": self.cases, "cases_per_s": round(self.cases / max(elapsed, 1e-9), 3),
                "kinds": dict(self.kinds), "distinct_findings": len(self.findings),
                "root_causes": self.root_causes, "triage": self.triage,
                "findings": list(self.findings.values()), "worker_restarts": self.crashes,
                "sanitizer": self.sanitizer,
                "coverage": self.coverage.to_dict(), "environment": self.env}


def crash_verdict(impl: str, case: Case, why: str) -> dict:
    """The verdict of a case that killed (or hung) its worker process."""
    failure = crash_failure(why)
    return Verdict("crash", impl, signature("crash", impl, case, failure), why, failure=failure).to_dict()


def run_campaign(cfg: CampaignConfig) -> Report:
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = Report(cfg)
    from .triage import CampaignTriage
    triage = CampaignTriage(cfg)
    deadline = time.monotonic() + cfg.budget
    worker = Worker(cfg.device, cfg.impl)
    index = cfg.shard[0]
    last_print = 0.0
    try:
        while (time.monotonic() < deadline and (cfg.max_cases is None or report.cases < cfg.max_cases)
               and (cfg.stop_after is None or len(report.findings) < cfg.stop_after)):
            case = case_for(cfg, index)
            meta = cfg.metamorphic_every > 0 and (index // cfg.shard[1]) % cfg.metamorphic_every == 0
            left = deadline - time.monotonic()
            timeout = CASE_TIMEOUT_S[cfg.device]
            try:
                vd = worker.run(case, meta, min(timeout, left + 5.0))
            except WorkerDied as e:
                if left + 5.0 < timeout and time.monotonic() >= deadline:
                    break  # the budget ran out mid-case: not a finding, the case is simply not counted
                vd = crash_verdict(cfg.impl, case, str(e))
                worker.close()
                report.crashes += 1
                worker = Worker(cfg.device, cfg.impl)
            report.cases += 1
            report.kinds[vd["kind"]] += 1
            report.coverage.add(case, vd.get("features", []))
            new = vd["kind"] != "pass" and _record(cfg, report, case, index, vd)
            if new:  # triage: minimise, explain, group into root causes (fuzz.triage)
                worker = triage.after_finding(report, case, vd, worker)
            if cfg.sanitize_every and (new or report.cases % cfg.sanitize_every == 0):
                _sanitize(cfg, report, case, index, vd)
            index += cfg.shard[1]
            now = time.monotonic()
            if not cfg.quiet and (now - last_print > 5 or vd["kind"] != "pass"):
                last_print = now
                _progress(report, deadline - now)
            if report.cases % 10 == 0:
                write_atomic(cfg.out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    finally:
        worker.close()
    triage.finish(report)  # triage: final root causes and time shares
    write_atomic(cfg.out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
    if not cfg.quiet:
        _progress(report, 0.0)
    return report


def _record(cfg: CampaignConfig, report: Report, case: Case, index: int, vd: dict) -> bool:
    """Count a finding; a new signature also gets its repro file. Returns whether it was new."""
    sig = vd["signature"]
    if sig in report.findings:
        report.findings[sig]["count"] += 1
        return False
    name = f"repro-{len(report.findings):03d}-{vd['kind']}.json"
    path = cfg.out / name
    verdict = Verdict(**vd)
    save(Repro(case, cfg.impl, cfg.device, verdict, report.env), path)
    report.findings[sig] = {"signature": sig, "kind": vd["kind"], "count": 1, "case_index": index,
                            "message": vd["message"], "repro": str(path)}
    if not cfg.quiet:
        print(f"FINDING {vd['kind']}: {vd['message'][:160]}\n  REPRO: python -m fuzz replay {path}",
              file=sys.stderr, flush=True)
    return True


def _sanitize(cfg: CampaignConfig, report: Report, case: Case, index: int, vd: dict) -> None:
    """Replay the case under compute-sanitizer memcheck (SPEC §5) in a child process; errors are kept."""
    import subprocess
    path = cfg.out / "sanitize" / f"case-{index}.json"
    save(Repro(case, cfg.impl, cfg.device, Verdict(**vd), report.env), path)
    proc = subprocess.run([sys.executable, "-m", "fuzz", "replay", str(path), "--sanitize"], capture_output=True,
                          text=True, timeout=CASE_TIMEOUT_S["cuda"] * 5)
    report.sanitizer["runs"] += 1
    if "errors reported" in proc.stdout:
        report.sanitizer["errors"].append({"case_index": index, "repro": str(path),
                                           "output": proc.stdout[-2000:]})
        if not cfg.quiet:
            print(f"SANITIZER: memcheck errors on case {index}; repro {path}", file=sys.stderr, flush=True)
    else:
        path.unlink(missing_ok=True)


def _progress(report: Report, left: float) -> None:
    elapsed = time.time() - report.started
    print(f"[{elapsed:7.1f}s] cases {report.cases} ({report.cases / max(elapsed, 1e-9):.2f}/s) "
          f"findings {len(report.findings)} root causes {len(report.root_causes)} | {max(left, 0):.0f}s left",
          file=sys.stderr, flush=True)
