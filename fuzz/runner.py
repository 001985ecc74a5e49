"""Time-budgeted campaigns over one self-restarting worker process.

Case i of a campaign is drawn from RandomSource(seed, i) over the shared knob space (fuzz.case), so a
campaign is reproducible and `--shard i/n` splits it into disjoint deterministic parts; which checks run on
a case (the metamorphic twin) depends on the case alone, so the shards together check exactly what the
unsharded run checks. Every distinct finding (by signature) gets a repro file, named by campaign and
signature so that nothing is ever overwritten, the moment it is found, and report.json is rewritten
atomically after it, every few cases and at exit (SIGINT and SIGTERM included).

`Worker` is the one place that runs cases out of process: it returns a Verdict for every case and restarts
itself when a case kills its process (`crash`), hangs past the per-case timeout (`hang`), or leaves the
device unusable (a sticky CUDA error is blamed on the case that caused it, not on the next one).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, phases
from .case import Case
from .coverage import Coverage
from .generate import CPU_SIZES, GPU_SIZES, class_of, draw
from .interpreter import install_if_interpreting
from .oracle import Verdict, crash_failure, probed, signature
from .repro import Repro, dumps, environment, save, write_atomic
from .upstream.trace import summary as upstream_summary

# Default per-case timeouts (--case-timeout): the slowest correct case of the nightly GPU profile takes a
# few seconds, of the CPU interpreter profile under a minute; a multiple of that is a hang, not a slow case.
CASE_TIMEOUT_S = {"cpu": 300.0, "cuda": 120.0}
STARTUP_TIMEOUT_S = 600.0  # importing torch/triton and the implementation, on a cold cache
LOG_CAP_BYTES = 4 << 20  # worker.log is rotated to worker.log.1 beyond this
POLL_S = 0.2  # how often a waiting parent checks the worker's log size


def new_campaign_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


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
    metamorphic_every: int = 4  # run the metamorphic twins on about one case in N (0: never)
    stop_after: int | None = None  # stop after this many distinct findings (benchmarks, quality tests)
    sanitize_every: int = 0  # GPU: replay every Nth case and every new finding under compute-sanitizer
    case_timeout: float | None = None  # seconds one case may take before it is a `hang` (None: by device)
    resume: bool = False  # continue the campaign whose report is in `out`, keeping its findings
    probe_contract: bool = False  # draw just outside the implementation's declared capabilities
    quiet: bool = False
    handle_signals: bool = False  # the CLI: SIGINT/SIGTERM end the campaign cleanly (exit 130/143), not raise
    campaign_id: str = field(default_factory=new_campaign_id)
    triage_share: float | None = None  # triage (fuzz.triage): share of the budget (None: 0.2; 0 with stop_after)
    triage_cap: float | None = None  # and seconds per finding (None: 30 on cpu, 20 on cuda)
    precompile: int | None = None  # helper processes compiling ahead (fuzz.precompile; None: by device and cores)

    @property
    def sizes(self):
        return GPU_SIZES if (self.device == "cuda" and self.profile == "nightly") else CPU_SIZES

    @property
    def timeout(self) -> float:
        return self.case_timeout or CASE_TIMEOUT_S[self.device]

    @property
    def _suffix(self) -> str:  # shards may share one directory: each keeps its own report and log
        return "" if self.shard[1] == 1 else f"-shard{self.shard[0]}of{self.shard[1]}"

    @property
    def report_path(self) -> Path:
        return self.out / f"report{self._suffix}.json"

    @property
    def log_path(self) -> Path:
        return self.out / f"worker{self._suffix}.log"


def _case_seed(cfg: CampaignConfig, index: int) -> int:
    return (cfg.seed * 1_000_003 + index) % (2**63)


def compile_class(cfg: CampaignConfig, index: int) -> int | None:
    """The shared compile class of the index-th case (fuzz.generate.Classes), None for a class of its own."""
    return class_of(cfg.sizes, _case_seed(cfg, index), index)


def case_for(cfg: CampaignConfig, index: int, impl=None) -> Case:
    """The index-th case of the campaign: a pure function of (seed, index, device, profile) and, given the
    implementation's profile (fuzz.impls.ImplProfile), fitted to what it takes and declares."""
    case = draw(cfg.sizes, _case_seed(cfg, index), index, interpreter=cfg.device == "cpu")
    return case if impl is None else impl.fit(case)


def probe_for(cfg: CampaignConfig, case: Case, impl) -> tuple[Case, str]:
    """--probe-contract: the case moved just outside one declared capability, and what it breaks ("" when the
    implementation declares nothing, or the violation cannot run on this device)."""
    broken = None
    if cfg.probe_contract and impl is not None:  # capabilities and, for upstream conventions, their contract
        broken = impl.violate(case) if hasattr(impl, "violate") else impl.capabilities.violate(case)
    if broken is None:
        return case, ""
    what, outside = broken
    try:
        return outside.validate(interpreter=cfg.device == "cpu"), what
    except ValueError:
        return case, ""


def runs_twin(cfg: CampaignConfig, case: Case) -> bool:
    """Whether the metamorphic twin runs on this case: a hash of the case's seed, never of the shard."""
    if cfg.metamorphic_every <= 0:
        return False
    mixed = (case.seed * 0x9E3779B97F4A7C15) & (2**64 - 1)  # Fibonacci hashing spreads consecutive seeds
    return (mixed >> 32) % cfg.metamorphic_every == 0


# ---- the worker process ---------------------------------------------------------------------------------
def device_probe(device: str) -> None:
    """Raise if the device is unusable after a case: a CUDA fault is sticky, every later call fails."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _redirect_output(log: str) -> None:
    """Send this process's stdout/stderr (fd 1 and 2, so C code and subprocesses too) to the log file."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _worker_main(conn, device: str, impl_name: str, log: str | None, helper: bool = False) -> None:
    """helper: a fuzz.precompile helper, which must not slow the campaign's own worker down: lower CPU priority
    and one host thread for torch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles interrupts and ends this process
    if helper:
        os.nice(10)
        import torch

        torch.set_num_threads(1)
    # TRITON_INTERPRET is inherited from the parent (the CLI sets it for --device cpu before any import)
    from .impls import ImplError, resolve

    install_if_interpreting()  # a spawned worker does not inherit the parent's interpreter patches
    phases.count_jit()
    try:
        impl = resolve(impl_name)
    except ImplError as e:
        conn.send({"fatal": str(e)})
        return
    except BaseException as e:  # sys.exit() at import, or anything resolve() does not wrap
        conn.send({"fatal": f"--impl {impl_name!r}: loading it raised {_first_line(e)}"})
        return
    if log:
        _redirect_output(log)
    conn.send({"ready": True, "profile": impl.profile()})
    while True:
        msg = conn.recv()
        if msg is None:
            return
        case, verdict = msg["case"], None
        phases.take()  # what happened between cases (e.g. a crashed case's partial phases) is not this case's
        try:
            with phases.phase("oracle"):
                verdict = _judge_here(msg, case, impl, impl_name, device)
            device_probe(device)  # after the implementation returned: a device fault belongs to THIS case
        except Exception as e:  # outside the implementation: the process (e.g. its CUDA context) is broken
            conn.send({"broken": _first_line(e), "verdict": verdict})
            return
        conn.send({"verdict": verdict, "phases": phases.take()})


def _judge_here(msg: dict, case: Case, impl, impl_name: str, device: str) -> Verdict:
    from .oracle import check

    if msg["mode"] == "upstream":
        from .upstream_style import upstream_check

        ok, why = upstream_check(case, impl, device)
        kind = "pass" if ok else "mismatch"
        return Verdict(kind, impl_name, "" if ok else signature(kind, impl_name, case), why)
    return check(
        case,
        impl_name,
        device,
        metamorphic=msg["metamorphic"],
        impl=impl,
        guards=msg["guards"],
        probe=msg.get("probe", ""),
        permutation=False if msg.get("quick") else None,
        diagnose=not msg.get("quick"),
    )


class _NoAnswer(Exception):
    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind  # "hang" or "crash"


class Worker:
    """One child process judging cases with the oracle. `judge` always returns a Verdict: a case that kills
    the process, hangs past its timeout or breaks the device is that case's `crash` / `hang` finding, and
    the next case gets a fresh process. Output of the implementation goes to `log` (capped) when given.
    Raises ImplError if the implementation cannot be loaded."""

    def __init__(self, device: str, impl: str, log: Path | None = None):
        self.device, self.impl, self.log = device, impl, log
        self.on_wait = None  # called every POLL_S while a case runs (the campaign feeds its precompiler)
        self.ahead = None  # given the cases triage is about to judge here (fuzz.precompile.Precompiler.ahead)
        self.restarts = 0
        self._proc = None
        self._start()

    def _start(self) -> None:
        from .impls import ImplError

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_worker_main, args=(child, self.device, self.impl, str(self.log) if self.log else None), daemon=True
        )
        try:
            self._proc.start()
            child.close()
            first = self._recv(STARTUP_TIMEOUT_S)
        except _NoAnswer as e:
            self.kill()
            raise ImplError(f"--impl {self.impl!r}: the worker could not load it ({e})") from None
        except BaseException:
            self.kill()
            raise
        if "fatal" in first:
            self.kill()
            raise ImplError(first["fatal"])
        self.profile = first["profile"]

    def _recv(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while not self._conn.poll(max(0.0, min(POLL_S, end - time.monotonic()))):
            self._cap_log()
            if self.on_wait:
                self.on_wait()
            if time.monotonic() >= end:
                raise _NoAnswer(
                    "hang",
                    f"no verdict within the case timeout of {timeout:g} s; the worker was "
                    "killed (replay with --case-timeout to wait longer)",
                )
        try:
            return self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            self._proc.join(5)
            raise _NoAnswer("crash", f"worker process died (exit code {self._proc.exitcode})") from None

    def _cap_log(self) -> None:
        """Keep the log bounded: beyond the cap its last cap bytes move to LOG.1 and it starts over (the
        child appends with O_APPEND, so truncating it under the child is safe)."""
        if not self.log:
            return
        try:
            size = self.log.stat().st_size
            if size <= LOG_CAP_BYTES:
                return
            with open(self.log, "rb") as f:
                f.seek(size - LOG_CAP_BYTES)
                tail = f.read(LOG_CAP_BYTES)
            write_atomic(self.log.with_name(self.log.name + ".1"), tail.decode("utf-8", "replace"))
            os.truncate(self.log, 0)
        except OSError:
            pass

    def judge(
        self,
        case: Case,
        *,
        timeout: float,
        metamorphic: bool = False,
        guards: bool = True,
        mode: str = "fuzz",
        probe: str = "",
        quick: bool = False,
    ) -> Verdict:
        """probe: the declared capability the case breaks (--probe-contract), "" for an ordinary case.
        quick: no diagnosis reruns and no permutation twin (triage's runs: see oracle.check's `diagnose`)."""
        self.phases = {}  # the worker's phase times for this case (fuzz.phases), when it answers
        if self._proc is None:
            self._start()
            self.restarts += 1
        try:
            self._conn.send(
                {
                    "case": case,
                    "metamorphic": metamorphic,
                    "guards": guards,
                    "mode": mode,
                    "probe": probe,
                    "quick": quick,
                }
            )
            answer = self._recv(timeout)
        except (BrokenPipeError, ConnectionError, OSError):
            answer = {"broken": "worker process died before the case"}
        except _NoAnswer as e:
            self.kill()
            self._cap_log()
            failure = "hang" if e.kind == "hang" else crash_failure(str(e))
            return probed(
                Verdict(e.kind, self.impl, signature(e.kind, self.impl, case, failure), str(e), failure=failure),
                case,
                probe,
            )
        if "broken" in answer:
            self.kill()
            v = answer.get("verdict")
            seen = f"; before that the implementation's verdict was {v.kind}: {v.message[:200]}" if v else ""
            why = f"the worker broke on this case ({answer['broken']}){seen}"
            failure = crash_failure(why)
            return probed(
                Verdict("crash", self.impl, signature("crash", self.impl, case, failure), why, failure=failure),
                case,
                probe,
            )
        self._cap_log()
        self.phases = answer.get("phases", {})
        return answer["verdict"]

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(10)
            self._conn.close()
        self._proc = None

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (BrokenPipeError, ConnectionError, OSError):
            pass
        self._proc.join(2)
        self.kill()


# ---- the campaign ---------------------------------------------------------------------------------------
@dataclass
class Report:
    cfg: CampaignConfig
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
    root_causes: list = field(default_factory=list)  # fuzz.triage fills these two
    triage: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # fuzz.phases: {path: [seconds, count]}, worker's and ours
    precompile: dict = field(default_factory=dict)  # fuzz.precompile's helpers: processes, cases, restarts
    harness_error: str | None = None  # a stand-in gap met by a case (verdict harness-error): the campaign stopped
    impl_settings: dict = field(default_factory=dict)  # the implementation's declared settings (worker.profile)

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
            "harness_error": self.harness_error,
            "upstream": upstream_summary(self.impl_settings, self.coverage.edges),
            "phases": {k: {"s": round(sv, 3), "n": n} for k, (sv, n) in sorted(self.phases.items())},
            "environment": self.env,
        }

    def write(self) -> None:
        phases.add(self.phases, phases.take())  # this process's phases so far (the worker's come per case)
        write_atomic(self.cfg.report_path, dumps(self.to_dict(), indent=2) + "\n")

    def resume_from(self, old: dict) -> None:
        """Carry a previous report's counts and findings; its coverage is not merged (this session's only)."""
        self.cases = old["cases"]
        self.kinds.update(old["kinds"])
        self.findings = {f["signature"]: f for f in old["findings"]}
        self.next_index = old.get("next_index")
        self.previous = old.get("resumed", []) + [old.get("campaign")]


class Interrupted(BaseException):
    """SIGINT/SIGTERM during a campaign: unwinds to the report's last write (BaseException so that no
    `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Turn SIGINT/SIGTERM into Interrupted while a campaign runs (main thread only); once, then ignore."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.saved = {}
        if self.enabled and mp.current_process().name == "MainProcess":
            try:
                for s in (signal.SIGINT, signal.SIGTERM):
                    self.saved[s] = signal.signal(s, self._raise)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _raise(self, signum, frame):
        for s in self.saved:
            signal.signal(s, signal.SIG_IGN)  # the clean-up that follows must not be interrupted again
        raise Interrupted(signum)

    def __exit__(self, *exc):
        for s, h in self.saved.items():
            signal.signal(s, h)
        return False


class ResumeError(ValueError):
    """--resume cannot continue the report it found (usage error, exit 2)."""


def _previous_report(cfg: CampaignConfig) -> dict | None:
    import json

    if not (cfg.resume and cfg.report_path.is_file()):
        return None
    try:
        old = json.loads(cfg.report_path.read_text())
        if old.get("impl") != cfg.impl or old.get("seed") != cfg.seed or old.get("shard") != list(cfg.shard):
            raise ValueError(
                f"it was a campaign of impl {old.get('impl')!r}, seed {old.get('seed')}, shard "
                f"{old.get('shard')}; resume with the same --impl, --seed and --shard"
            )
        old["cases"], old["kinds"], old["findings"]  # noqa: B018 (the fields resuming needs)
        return old
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResumeError(f"--resume: cannot continue {cfg.report_path}: {e}") from None


def run_campaign(cfg: CampaignConfig) -> Report:
    """Run the campaign; ImplError if the implementation cannot be loaded, ResumeError if --resume cannot."""
    report = Report(cfg)
    old = _previous_report(cfg)
    if old:
        report.resume_from(old)
    from .triage import CampaignTriage

    triage = CampaignTriage(cfg)
    deadline = time.monotonic() + cfg.budget
    index = report.next_index if report.next_index is not None else cfg.shard[0]
    last_print = 0.0
    with _Signals(cfg.handle_signals):
        worker = pre = None
        phases.take()
        try:
            with phases.phase("startup"):
                worker = Worker(cfg.device, cfg.impl, log=cfg.log_path)
                pre = _precompiler(cfg, worker)
                report.impl_settings = dict(getattr(worker.profile, "settings", None) or {})
            cfg.out.mkdir(parents=True, exist_ok=True)
            while (
                time.monotonic() < deadline
                and (cfg.max_cases is None or report.cases < cfg.max_cases)
                and (cfg.stop_after is None or len(report.findings) < cfg.stop_after)
            ):
                if pre:
                    with phases.phase("precompile"):
                        pre.at(index)
                with phases.phase("generate"):
                    case, probe = probe_for(cfg, case_for(cfg, index, worker.profile), worker.profile)
                    twin = runs_twin(cfg, case) and not probe
                # the full case timeout even past the deadline: a hang found late is still a finding
                v = _judge_timed(worker, report, case, timeout=cfg.timeout, metamorphic=twin, probe=probe)
                report.cases += 1
                report.metamorphic_cases += twin
                report.kinds[v.kind] += 1
                if v.kind == "harness-error":  # the harness, not the kernel: stop here (the CLI exits 2)
                    report.harness_error = v.message
                    break
                report.crashes += v.kind in ("crash", "hang")
                with phases.phase("coverage"):
                    report.coverage.add(case, v.features)
                with phases.phase("record"):
                    new = v.failed and _record(cfg, report, case, index, v)
                if new and not probe:  # minimise, explain, group into root causes (fuzz.triage)
                    with phases.phase("triage"):
                        triage.after_finding(report, case, v.to_dict(), worker)
                if cfg.sanitize_every and (new or report.cases % cfg.sanitize_every == 0):
                    _sanitize(cfg, report, case, index, v)
                index += cfg.shard[1]
                report.next_index = index
                now = time.monotonic()
                if not cfg.quiet and (now - last_print > 5 or v.failed):
                    last_print = now
                    _progress(report, deadline - now)
                if report.cases % 10 == 0:
                    with phases.phase("report"):
                        report.write()
        except (Interrupted, KeyboardInterrupt) as e:
            report.interrupted = str(e) if isinstance(e, Interrupted) else "SIGINT"
            if worker is not None:
                worker.kill()  # now: the case it was running is abandoned
            if isinstance(e, KeyboardInterrupt):  # a library caller's Ctrl-C: record, then let it through
                report.write()
                raise
        finally:
            if pre is not None:
                report.precompile = pre.summary()
                pre.close()
            if worker is not None:
                worker.close()
        if not report.interrupted:
            with phases.phase("triage"):
                triage.finish(report)  # final root causes and time shares (fuzz.triage)
        if report.interrupted or cfg.out.is_dir():
            report.write()
    if not cfg.quiet and report.cases and not report.interrupted:  # else the CLI's one line says it all
        _progress(report, deadline - time.monotonic())
    return report


def _precompiler(cfg: CampaignConfig, worker: Worker):
    """Helpers compiling ahead (fuzz.precompile), fed while the worker runs a case; None when there are none."""
    from .precompile import Precompiler, default_processes

    n = default_processes(cfg.device) if cfg.precompile is None else cfg.precompile
    if n <= 0 or cfg.sizes.classes is None:
        return None
    pre = Precompiler(cfg, n, worker.profile)
    worker.on_wait, worker.ahead = pre.feed, pre.ahead  # triage's minimiser tells `ahead` what it will try
    return pre


def _judge_timed(worker: Worker, report: Report, case: Case, **kw) -> Verdict:
    """worker.judge, with the worker's phases added to the report's and the rest of the round trip (pickling,
    the pipe, the device probe, a restart) as `ipc`."""
    t0 = time.perf_counter()
    v = worker.judge(case, **kw)
    wall = time.perf_counter() - t0
    timed = getattr(worker, "phases", {})  # stand-in workers (tests) time nothing
    phases.add(report.phases, timed)
    phases.add(report.phases, {"ipc": [wall - sum(s for s, _ in timed.values()), 1]})
    return v


def repro_name(cfg: CampaignConfig, v: Verdict) -> str:
    """Unique per campaign and signature: no campaign, shard or resumed run overwrites another's repro."""
    return f"repro-{cfg.campaign_id}-{v.kind}-{hashlib.sha1(v.signature.encode()).hexdigest()[:8]}.json"


def _record(cfg: CampaignConfig, report: Report, case: Case, index: int, v: Verdict) -> bool:
    """Count a finding; a new signature also gets its repro file and a fresh report.json. Returns whether
    it was new."""
    sig = v.signature
    if sig in report.findings:
        report.findings[sig]["count"] += 1
        return False
    path = cfg.out / repro_name(cfg, v)
    save(Repro(case, cfg.impl, cfg.device, v, report.env, cfg.timeout, cfg.campaign_id), path)
    report.findings[sig] = {
        "signature": sig,
        "kind": v.kind,
        "count": 1,
        "case_index": index,
        "message": v.message,
        "repro": str(path.resolve()),
    }
    report.write()
    if not cfg.quiet:
        print(
            f"FINDING {v.kind}: {v.message[:160]}\n  REPRO: python -m fuzz replay {path} --impl {cfg.impl}",
            file=sys.stderr,
            flush=True,
        )
    return True


def _sanitize(cfg: CampaignConfig, report: Report, case: Case, index: int, v: Verdict) -> None:
    """Replay the case under compute-sanitizer memcheck (SPEC §5) in a child process; errors are kept."""
    import subprocess

    path = cfg.out / "sanitize" / f"case-{cfg.campaign_id}-{index}.json"
    save(Repro(case, cfg.impl, cfg.device, v, report.env, cfg.timeout, cfg.campaign_id), path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "moe_lora_fuzz.fuzz.cli",
            "replay",
            str(path),
            "--sanitize",
            "--impl",
            cfg.impl,
            "--case-timeout",
            str(cfg.timeout),
        ],
        capture_output=True,
        text=True,
        timeout=cfg.timeout * 5,
    )
    report.sanitizer["runs"] += 1
    if "errors reported" in proc.stdout:
        report.sanitizer["errors"].append({"case_index": index, "repro": str(path), "output": proc.stdout[-2000:]})
        if not cfg.quiet:
            print(f"SANITIZER: memcheck errors on case {index}; repro {path}", file=sys.stderr, flush=True)
    else:
        path.unlink(missing_ok=True)


def _progress(report: Report, left: float) -> None:
    elapsed = time.time() - report.started
    print(
        f"[{elapsed:7.1f}s] cases {report.cases} ({report.cases / max(elapsed, 1e-9):.2f}/s) "
        f"findings {len(report.findings)} root causes {len(report.root_causes)} | {max(left, 0):.0f}s left",
        file=sys.stderr,
        flush=True,
    )
