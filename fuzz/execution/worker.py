"""The campaign's worker and what a case of a campaign is: `CampaignConfig`, case i of a campaign
(`case_for`, `compile_class`, `probe_for`, `runs_twin`), the per-case timeouts, and `Worker`, the one place
that runs cases out of process: it returns a Verdict for every case and restarts itself when a case kills its
process (`crash`), hangs past the per-case timeout (`hang`), or leaves the device unusable (a sticky CUDA
error is blamed on the case that caused it, not on the next one). Used by the campaign loop (fuzz.campaign.runner),
compiling ahead (fuzz.campaign.precompile), the corpus replay and triage's minimiser; imports none of them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, crash_failure, probed, signature
from moe_lora_fuzz.fuzz.records.repro import write_atomic
from moe_lora_fuzz.fuzz.runtime import phases, sandbox, variants
from moe_lora_fuzz.fuzz.runtime.cpus import worker_cpus, worker_threads
from moe_lora_fuzz.fuzz.runtime.interpreter import install_if_interpreting
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, GPU_SIZES, class_of, draw

# Default per-case timeouts (--case-timeout): the slowest correct case of the nightly GPU profile takes a
# few seconds, of the CPU interpreter profile under a minute; a multiple of that is a hang, not a slow case.
CASE_TIMEOUT_S = {"cpu": 300.0, "cuda": 120.0}
STARTUP_TIMEOUT_S = 600.0  # importing torch/triton and the implementation, on a cold cache
LOG_CAP_BYTES = 4 << 20  # worker.log is rotated to worker.log.1 beyond this
POLL_S = 0.2  # how often a waiting parent checks the worker's log size
AFTER_CASE_S = 30.0  # the worker's check of its process after a case (milliseconds) has hung past this


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
    triage_share: float | None = (
        None  # triage (fuzz.triage.triager): share of the budget (None: 0.2; 0 with stop_after)
    )
    triage_cap: float | None = None  # and seconds per finding (None: 30 on cpu, 20 on cuda)
    precompile: int | None = (
        None  # helper processes compiling ahead (fuzz.campaign.precompile; None: by device and cores)
    )
    selfcheck: bool = True  # run our kernels on known cases in the worker first (fuzz.judgement.selfcheck)
    corpus: tuple = ()  # directories / repro files of earlier campaigns, replayed first (fuzz.campaign.corpus)
    prelude: bool = True  # the first cases reach every required edge (fuzz.execution.prelude)
    variant_draw: str = "auto"  # cases inside compiled kernel variants: auto (cuda), on, off (campaign.variant_draw)
    new_variant_share: float | None = None  # and the share drawn in new ones (None: 0.2)

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
    """The shared compile class of the index-th case (fuzz.space.generate.Classes), None for a class of its own (the
    prelude's cases are)."""
    if cfg.prelude and index < PRELUDE_CASES:
        return None
    return class_of(cfg.sizes, _case_seed(cfg, index), index)


def case_for(cfg: CampaignConfig, index: int, impl=None) -> Case:
    """The index-th case of the campaign: a pure function of (seed, index, device, profile) and, given the
    implementation's profile (fuzz.targets.impls.ImplProfile), fitted to what it takes and declares."""
    if cfg.prelude and index < PRELUDE_CASES:
        from moe_lora_fuzz.fuzz.execution.prelude import prelude_for

        first = prelude_for(cfg, impl)
        if index < len(first):
            return first[index]
    case = draw(cfg.sizes, _case_seed(cfg, index), index, interpreter=cfg.device == "cpu")
    return case if impl is None else impl.fit(case)


PRELUDE_CASES = 3  # indices the prelude may take (fuzz.execution.prelude)


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


def _worker_main(
    conn, device: str, impl_name: str, log: str | None, helper: bool = False, began=None, cpus=None, threads=None
) -> None:
    """helper: a fuzz.campaign.precompile helper, which must not slow the campaign's own worker down: lower CPU priority
    and one host thread for torch; its taint is not checked (it only compiles: no verdict of it is believed).
    began: a shared counter of the requests this process has taken (Worker: tells a failure after a case's answer
    from one during the next case). cpus: where this process and every thread it starts may run (a helper's:
    fuzz.runtime.cpus.helper_cpus), set before anything is imported. threads: torch's host threads, when not its
    default (fuzz.runtime.cpus.worker_threads; a helper's: one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles interrupts and ends this process
    if cpus:
        os.sched_setaffinity(0, cpus)
    if helper:
        os.nice(10)
        threads = 1
    if threads:
        import torch

        torch.set_num_threads(threads)
    # TRITON_INTERPRET is inherited from the parent (the CLI sets it for --device cpu before any import)
    from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve

    install_if_interpreting()  # a spawned worker does not inherit the parent's interpreter patches
    sandbox.contain()  # a case's processes, detached or not, stay ours, to be killed after it (fuzz.runtime.sandbox)
    phases.count_jit()
    variants.install()  # each case's kernel variants go with its verdict (fuzz.runtime.variants)
    if helper and device == "cuda":
        variants.compile_only()  # a helper compiles, the worker launches (fuzz.runtime.variants)
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
    profiler = _profiler(helper)
    before = None if helper else sandbox.fingerprint()
    reaped = 0  # processes the previous case left, killed after its answer: told with the next answer
    while True:
        msg = conn.recv()
        if profiler is not None:
            profiler.tick(last=msg is None)
        if msg is None:
            try:
                conn.send({"closed": True, "reaped": reaped})
            except OSError:
                pass
            return
        if began is not None:
            began.value += 1
        if msg.get("mode") == "selfcheck":
            from moe_lora_fuzz.fuzz.judgement.selfcheck import run_here

            conn.send({"selfcheck": run_here(device), "reaped": reaped})
            reaped, before = 0, None if helper else sandbox.fingerprint()
            continue
        case, verdict = msg["case"], None
        phases.take()  # what happened between cases (e.g. a crashed case's partial phases) is not this case's
        variants.take()
        try:
            with phases.phase("oracle"):
                verdict = _judge_here(msg, case, impl, impl_name, device)
            with phases.phase("probe"):  # timed: on a GPU its sync waits for whatever else the GPU runs
                device_probe(device)  # after the implementation returned: a device fault belongs to THIS case
        except Exception as e:  # outside the implementation: the process (e.g. its CUDA context) is broken
            conn.send({"broken": _first_line(e), "verdict": verdict, "reaped": reaped})
            return
        conn.send({"verdict": verdict, "phases": phases.take(), "variants": variants.take(), "reaped": reaped})
        before, reaped, tainted = _after_case(before)  # while the campaign records this verdict and draws the next
        if tainted:  # this process must not judge another case: it says why and ends (Worker._ask restarts it)
            conn.send({"tainted": tainted, "reaped": reaped})
            return


def _after_case(before):
    """After a case's answer went out: what it replaced in torch or the harness (fuzz.runtime.sandbox; not in a
    helper, `before` None) and the processes it left, killed. (new fingerprint, processes killed, taint or None)."""
    try:
        tainted = None
        if before is not None:
            after = sandbox.fingerprint()
            tainted, before = sandbox.changed(before, after), after
        return before, sandbox.reap_children(), tainted
    except Exception as e:  # the case broke what checks it: not a process to judge the next case in
        return before, 0, f"checking the process after the case raised {_first_line(e)}"


class _Profiler:
    """cProfile of a worker's cases, saved every PROFILE_EVERY messages (a killed worker keeps the last save):
    $MOE_LORA_FUZZ_PROFILE_DIR/worker-PID.pstats, for `python -m pstats` (a diagnostic: where a GPU campaign's
    host time goes)."""

    def __init__(self, folder: str):
        import cProfile

        self.path = Path(folder) / f"worker-{os.getpid()}.pstats"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.prof, self.count = cProfile.Profile(), 0
        self.prof.enable()

    def tick(self, last: bool) -> None:
        self.count += 1
        if last or self.count % PROFILE_EVERY == 0:
            self.prof.dump_stats(self.path)


PROFILE_EVERY = 100


def _profiler(helper: bool):
    folder = os.environ.get("MOE_LORA_FUZZ_PROFILE_DIR")
    return _Profiler(folder) if folder and not helper else None


def _judge_here(msg: dict, case: Case, impl, impl_name: str, device: str) -> Verdict:
    from moe_lora_fuzz.fuzz.judgement.oracle import check, compile_ahead

    if msg["mode"] == "compile":  # a compile-ahead helper's (fuzz.campaign.precompile): nothing judged
        where = os.environ.get("MOE_LORA_FUZZ_HELPERS_BUILD", "auto")  # host: a measurement knob (issue 29)
        compile_ahead(case, impl_name, device, metamorphic=msg["metamorphic"], impl=impl, where=where)
        return Verdict("pass", impl_name, "", "compiled ahead, not judged")
    if msg["mode"] == "upstream":
        from moe_lora_fuzz.fuzz.targets.upstream_style import upstream_check

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


def _pinned(device: str):
    return worker_cpus() if device == "cuda" else None


class _NoAnswer(Exception):
    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind  # "hang" or "crash"


class Worker:
    """One child process judging cases with the oracle. `judge` always returns a Verdict: a case that kills
    the process, hangs past its timeout or breaks the device is that case's `crash` / `hang` finding, and
    the next case gets a fresh process. Output of the implementation goes to `log` (capped) when given.
    Raises ImplError if the implementation cannot be loaded."""

    def __init__(self, device: str, impl: str, log: Path | None = None, startup_timeout: float = STARTUP_TIMEOUT_S):
        self.device, self.impl, self.log = device, impl, log
        self.startup_timeout = startup_timeout  # the first start's (a campaign's budget cuts it); restarts: full
        self.on_wait = None  # called every POLL_S while a case runs (the campaign feeds its precompiler)
        self.on_sent = None  # called once a case is sent, while the worker runs it (work that need not wait for it)
        self.ahead = None  # given the cases triage is about to judge here (fuzz.campaign.precompile.Precompiler.ahead)
        self.on_variants = (
            None  # told (case, run flags, the case's variants) after each answer (fuzz.campaign.variant_draw)
        )
        self.restarts = 0
        self.tainted = 0  # restarts because a case changed torch or the harness (fuzz.runtime.sandbox)
        self.reaped = 0  # processes cases left behind, killed after them
        self.last_taint = None  # why the latest taint restart happened
        self._proc = None
        self._start()

    def _start(self) -> None:
        from moe_lora_fuzz.fuzz.targets.impls import ImplError

        began_start = time.monotonic()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._began, self._asked = ctx.RawValue("q", 0), 0  # requests the process took / this side sent it
        log = str(self.log) if self.log else None
        self._proc = ctx.Process(
            target=_worker_main,
            args=(child, self.device, self.impl, log),
            kwargs={"began": self._began, "cpus": _pinned(self.device), "threads": worker_threads(self.device)},
            daemon=True,
        )
        try:
            self._proc.start()
            child.close()
            first = self._recv(self.startup_timeout)
        except _NoAnswer as e:
            self.kill()
            why = f"not loaded within {self.startup_timeout:.0f} s" if e.kind == "hang" else str(e)
            raise ImplError(f"--impl {self.impl!r}: the worker could not load it ({why})") from None
        except BaseException:
            self.kill()
            raise
        if "fatal" in first:
            self.kill()
            raise ImplError(first["fatal"])
        self.profile, self.startup_timeout = first["profile"], STARTUP_TIMEOUT_S
        self.start_s = time.monotonic() - began_start

    def _recv(self, timeout: float, request: bool = False) -> dict:
        """The next message, within `timeout`. request: the answer to the latest request, whose timeout counts
        from when the worker took it: it may still be checking its process after the previous case (milliseconds;
        past AFTER_CASE_S that check hung, and the wait ends with the request not taken: Worker._ask)."""
        start = time.monotonic()
        end = start + timeout
        checking = request and self._asked > 1  # a process that answered before may still check itself
        while not self._conn.poll(max(0.0, min(POLL_S, end - time.monotonic()))):
            self._cap_log()
            if self.on_wait:
                self.on_wait()
            now = time.monotonic()
            untaken = checking and self._began.value < self._asked
            if untaken and now - start < AFTER_CASE_S:
                end = now + timeout  # not taken yet: its timeout has not started
            elif now >= end or untaken:
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
        self.phases = {}  # the worker's phase times for this case (fuzz.runtime.phases), when it answers
        request = {
            "case": case,
            "metamorphic": metamorphic,
            "guards": guards,
            "mode": mode,
            "probe": probe,
            "quick": quick,
        }
        try:
            answer = self._ask(request, timeout)
        except _NoAnswer as e:
            self.kill()
            self._cap_log()
            return self.unanswered(case, e.kind, str(e), probe)
        if "broken" in answer:
            self.kill()
            v = answer.get("verdict")
            seen = f"; before that the implementation's verdict was {v.kind}: {v.message[:200]}" if v else ""
            return self.unanswered(case, "crash", f"the worker broke on this case ({answer['broken']}){seen}", probe)
        self._cap_log()
        self.phases = answer.get("phases", {})
        if self.on_variants is not None and "variants" in answer:
            self.on_variants(case, {"metamorphic": metamorphic, "quick": quick, "probe": probe}, answer["variants"])
        return answer["verdict"]

    def unanswered(self, case: Case, kind: str, why: str, probe: str = "") -> Verdict:
        """The verdict of a case that got no answer: `hang` (no answer in time) or `crash` (the process died or
        broke)."""
        failure = "hang" if kind == "hang" else crash_failure(why)
        verdict = Verdict(kind, self.impl, signature(kind, self.impl, case, failure), why, failure=failure)
        return probed(verdict, case, probe)

    def must_start(self) -> float:
        """Seconds the next request spends starting a process first: the last start's, or 0 while one runs."""
        return self.start_s if self._proc is None else 0.0

    def _ask(self, request: dict, timeout: float) -> dict:
        """Send one request, return its answer. The worker answers a case first and then checks what the case
        did to its process (fuzz.runtime.sandbox: the fingerprint, its leftover processes) while the campaign
        records the answer and draws the next case. So the next request may meet, instead of its answer, the
        previous case's verdict on the process: {"tainted": why}, sent by a worker that then ended without
        reading this request; or a worker that died or hung before taking it (Worker._began). Either way the
        previous case is counted (`tainted`), and this request goes to a fresh worker: it is never judged by a
        tainted process, and a failure is only this request's when the process had taken it. Raises _NoAnswer."""
        while True:  # ends: a fresh process (_asked 1) neither sends a taint first nor fails a request it never took
            if self._proc is None:
                self._start()
                self.restarts += 1
            self._asked += 1
            try:
                self._conn.send(request)
                sent = True
            except (BrokenPipeError, ConnectionError, OSError):  # ended: its last words are still to be read
                sent = False
            if sent and self.on_sent is not None and "case" in request:
                self.on_sent()
            try:
                answer = self._recv(timeout, request=True)
            except _NoAnswer as e:
                if self._asked > 1 and self._began.value < self._asked:  # it failed before taking this request
                    why = "hung" if e.kind == "hang" else f"died (exit code {self._proc.exitcode})"
                    self._tainted(f"the worker {why} after answering the previous request")
                    continue
                if not sent:
                    return {"broken": "worker process died before the case"}
                raise
            self.reaped += answer.get("reaped", 0)
            if "tainted" in answer:
                self._tainted(answer["tainted"])
                continue
            return answer

    def _tainted(self, why: str) -> None:
        """The previous case left this process unfit to judge another (fuzz.runtime.sandbox): end it."""
        self._count_taint(why)
        self.kill()

    def _count_taint(self, why: str) -> None:
        self.tainted += 1
        self.last_taint = why

    def selfcheck(self, timeout: float) -> str | None:
        """fuzz.judgement.selfcheck in the worker: None when our kernels pass the known cases here, else why not."""
        try:
            answer = self._ask({"mode": "selfcheck"}, timeout)
        except _NoAnswer as e:
            self.kill()
            return f"the self-check did not finish: {e}"
        return answer["selfcheck"] if "selfcheck" in answer else "the worker died before the self-check"

    def _last_words(self) -> None:
        """At close: what the worker said after its last answer (processes the last case left; a taint)."""
        try:
            while self._conn.poll(0):
                msg = self._conn.recv()
                self.reaped += msg.get("reaped", 0)
                if "tainted" in msg:
                    self._count_taint(msg["tainted"])
        except (EOFError, OSError):
            pass

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.pid is not None:  # None: it never started (spawn refused, e.g. no __main__ guard)
                sandbox.kill_tree(self._proc.pid)  # what the case started, detached or not, and the worker's group
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
        self._last_words()
        if self._proc.exitcode is not None:  # ended on its own; what its cases started was killed after each
            self._conn.close()
            self._proc = None
            return
        self.kill()
