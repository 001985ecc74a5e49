"""Time-budgeted campaigns over one self-restarting worker process.

Case i of a campaign is drawn from RandomSource(seed, i) over the shared knob space (fuzz.space.case), so a
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

import sys
import time
from functools import partial

from moe_lora_fuzz.fuzz.campaign.budget import Budget, CappedWorker, process_age
from moe_lora_fuzz.fuzz.campaign.casework import _finding_line, _judge_timed, _progress, _record, repro_name  # noqa: F401 (tests, corpus)
from moe_lora_fuzz.fuzz.campaign.lifecycle import Interrupted, _Signals, finish, shutdown, uninterrupted
from moe_lora_fuzz.fuzz.execution.worker import (  # noqa: F401 (the CLI and tests import these from here)
    CASE_TIMEOUT_S,
    LOG_CAP_BYTES,
    POLL_S,
    PRELUDE_CASES,
    STARTUP_TIMEOUT_S,
    CampaignConfig,
    Worker,
    case_for,
    compile_class,
    device_probe,
    new_campaign_id,
    probe_for,
    runs_twin,
)
from moe_lora_fuzz.fuzz.judgement.selfcheck import EnvironmentBroken
from moe_lora_fuzz.fuzz.outputs.campaign_record import Report, saving
from moe_lora_fuzz.fuzz.records import outdir
from moe_lora_fuzz.fuzz.records.outdir import OutputError, ResumeError  # noqa: F401 (ResumeError: the CLI imports it from here)
from moe_lora_fuzz.fuzz.runtime import phases

REPORT_EVERY_S = 1.0  # report.json is rewritten after a case at most this often (and after every finding)


# ---- the campaign ---------------------------------------------------------------------------------------
def run_campaign(cfg: CampaignConfig) -> Report:
    """Run the campaign. Raises, each one `error:` line for the CLI (exit 2): ImplError (the implementation
    cannot be loaded), ResumeError (--resume cannot continue), LockError (another campaign writes this report),
    EnvironmentBroken (our own kernels fail the self-check here: fuzz.judgement.selfcheck), OutputError (the disk
    refused an output; it says what was saved). A signal at any moment ends it with report.interrupted set and the
    report written (once this campaign owns it)."""
    report = Report(cfg)
    budget = Budget(cfg.budget, time.monotonic() - process_age() if cfg.handle_signals else None)  # CLI: from its start
    with _Signals(cfg.handle_signals):
        lock = None
        try:
            lock = outdir.Lock(cfg.report_path, cfg.campaign_id).__enter__()
            if lock.taken_over:
                report.notes.append(lock.taken_over)
            _campaign(cfg, report, budget)
        except Interrupted as e:  # before the lock was ours: nothing written
            report.interrupted = report.interrupted or str(e)
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)
    if not cfg.quiet and report.cases and not report.interrupted:  # else the CLI's one line says it all
        _progress(report, budget.deadline - time.monotonic())
    return report


def _campaign(cfg: CampaignConfig, report: Report, budget: Budget) -> None:
    worker = pre = triage = failure = None
    try:
        old = outdir.previous_report(cfg)
        if old:
            report.resume_from(old)
        report.owned = True
        from moe_lora_fuzz.fuzz.triage.offline import seed_triage
        from moe_lora_fuzz.fuzz.triage.triager import CampaignTriage

        triage = CampaignTriage(cfg)
        seed_triage(triage, report)
        phases.take()
        with phases.phase("startup"):
            worker = _start_worker(cfg, budget)
            pre = _precompiler(cfg, worker)
            report.impl_settings = dict(getattr(worker.profile, "settings", None) or {})
            if cfg.prelude:
                from moe_lora_fuzz.fuzz.execution.prelude import unreachable

                report.coverage.unreachable = unreachable(cfg, worker.profile)
        if cfg.corpus:
            if cfg.selfcheck and hasattr(worker, "selfcheck"):  # the corpus's findings are believed too
                _selfcheck(cfg, worker, budget)
            from moe_lora_fuzz.fuzz.campaign.corpus import replay_corpus

            replay_corpus(cfg, report, worker, triage)
        _loop(cfg, report, triage, budget, worker, pre)
    except (Interrupted, KeyboardInterrupt) as e:
        report.interrupted = str(e) if isinstance(e, Interrupted) else "SIGINT"
        if worker is not None:
            worker.kill()  # now: the case it was running is abandoned
        failure = e if isinstance(e, KeyboardInterrupt) else None  # a library caller's Ctrl-C: recorded, let through
    except OutputError as e:
        failure = e
    except EnvironmentBroken as e:  # no finding recorded; the report says why the campaign stopped
        report.notes.append(str(e))
        failure = e
    finally:
        shutdown(report, pre, worker)
    finish(report, triage, failure)


def _start_worker(cfg: CampaignConfig, budget: Budget) -> Worker:
    """The campaign's worker; its first start (importing the implementation) is cut by the budget. (A stand-in
    Worker of a test may not take the startup timeout.)"""
    import inspect

    cut = {"startup_timeout": max(budget.left(), 5.0)}
    takes = "startup_timeout" in inspect.signature(Worker).parameters
    return Worker(cfg.device, cfg.impl, log=cfg.log_path, **(cut if takes else {}))


def _selfcheck(cfg: CampaignConfig, worker: Worker, budget: Budget) -> bool:
    """fuzz.judgement.selfcheck in the worker, at the campaign's first failing verdict: a passing campaign never
    pays for it, and no finding is recorded before our own kernels were seen to pass here."""
    from moe_lora_fuzz.fuzz.judgement.selfcheck import message

    with phases.phase("selfcheck"):
        failure = worker.selfcheck(max(budget.left(), 30.0))  # not the case timeout: our kernels, not theirs
    if failure:
        raise EnvironmentBroken(message(cfg.device, failure))
    return True


def _loop(cfg: CampaignConfig, report: Report, triage, budget: Budget, worker: Worker, pre) -> None:
    from moe_lora_fuzz.fuzz.campaign.steer import Steering
    from moe_lora_fuzz.fuzz.campaign.variant_draw import attach

    steer = Steering(triage, interpreter=cfg.device == "cpu")
    variants = attach(cfg, worker, pre, report.started)  # variant-aware drawing (fuzz.campaign.variant_draw)
    index = report.next_index if report.next_index is not None else cfg.shard[0]
    last_print, checked = 0.0, False
    extras = {"variants": partial(variants.summary, cfg.device == "cpu"), "steering": steer.summary}
    while (
        not budget.over()
        and (cfg.max_cases is None or report.cases < cfg.max_cases)
        and (cfg.stop_after is None or len(report.findings) < cfg.stop_after)
    ):
        if pre:
            with phases.phase("precompile"):
                pre.at(index)
        with phases.phase("generate"):
            drawn = steer.avoid(variants.case(index), getattr(worker.profile, "fit", None))
            case, probe = probe_for(cfg, drawn, worker.profile)
            twin = runs_twin(cfg, case) and not probe
        timeout, t0 = budget.case_timeout(cfg.timeout), time.monotonic()  # past the budget only by its grace
        v = _judge_timed(worker, report, case, timeout=timeout, metamorphic=twin, probe=probe)
        if v.kind == "hang" and timeout < cfg.timeout:  # cut by the budget: not known to hang, not a finding
            report.notes.append(
                f"case {index} cut after {timeout:.1f} s at the end of the budget (its timeout is {cfg.timeout:g} s): "
                "not judged, not counted; --resume runs it again"
            )
            break
        v = steer.relabel(case, v)  # a failure beyond every known trigger is a finding of its own
        if v.failed and cfg.selfcheck and not checked and hasattr(worker, "selfcheck"):
            # before the first finding is believed (EnvironmentBroken), and before its case is counted: a signal
            # during the self-check leaves the case to --resume instead of counting a finding never recorded
            checked = _selfcheck(cfg, worker, budget)
        with uninterrupted():  # the case counted and its finding recorded land together (lifecycle)
            variants.after_case()
            report.extra.update(extras)  # summaries built when report.json is written, not after every case
            if not v.failed:
                budget.passed(time.monotonic() - t0)
            report.cases += 1
            report.metamorphic_cases += twin
            report.kinds[v.kind] += 1
            if v.kind == "harness-error":  # the harness, not the kernel: stop here (the CLI exits 2)
                report.harness_error = v.message
                break
            report.crashes += v.kind in ("crash", "hang")
            with phases.phase("coverage"):
                report.coverage.add(case, v.features, v)
            report.next_index = index + cfg.shard[1]  # before anything is written: a resume never counts it twice
            with phases.phase("record"):
                new = v.failed and _record(cfg, report, case, index, v)
        causes = len(report.root_causes)
        if new and not probe:  # minimise, explain, group into root causes (fuzz.triage.triager)
            with phases.phase("triage"), saving(report, "triage's minimal repro files"):
                triage.after_finding(report, case, v.to_dict(), CappedWorker(worker, budget, v.kind == "hang"))
            report.write()  # the triage done so far survives a kill
        if new and not cfg.quiet and (probe or len(report.root_causes) > causes):  # one line per new cause
            print(_finding_line(cfg, v, report.findings[v.signature]["repro"]), file=sys.stderr, flush=True)
        if cfg.sanitize_every and (new or report.cases % cfg.sanitize_every == 0):
            from moe_lora_fuzz.fuzz.campaign.sanitize import sanitize

            sanitize(cfg, report, case, index, v)
        index = report.next_index
        now = time.monotonic()
        if not cfg.quiet and now - last_print > 5:
            last_print = now
            _progress(report, budget.deadline - now)
        with phases.phase("report"):
            report.write(every=REPORT_EVERY_S)


def _precompiler(cfg: CampaignConfig, worker: Worker):
    """Helpers compiling ahead (fuzz.campaign.precompile), fed while the worker runs a case; None if none."""
    from moe_lora_fuzz.fuzz.campaign.precompile import Precompiler, default_processes
    from moe_lora_fuzz.fuzz.campaign.variant_draw import enabled

    n = default_processes(cfg.device) if cfg.precompile is None else cfg.precompile
    if n <= 0 or (cfg.sizes.classes is None and not enabled(cfg.variant_draw, cfg.device)):
        return None
    pre = Precompiler(cfg, n, worker.profile)
    worker.on_wait, worker.ahead = pre.feed, pre.ahead  # triage's minimiser tells `ahead` what it will try
    return pre
