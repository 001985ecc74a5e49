"""The campaign's life cycle around its loop: signals turned into `Interrupted`, and a shutdown and a final
report that a signal arriving at any moment (the final worker shutdown included) cannot skip.

`_Signals` turns the first SIGINT/SIGTERM into Interrupted and ignores the rest; `shutdown` and `finish` catch
an Interrupted raised inside them, note it in the report and go on, so the report is always written and the
campaign exits 130/143.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from contextlib import contextmanager

from moe_lora_fuzz.fuzz.records.outdir import OutputError
from moe_lora_fuzz.fuzz.runtime import phases


class Interrupted(BaseException):
    """SIGINT/SIGTERM during a campaign: unwinds to the report's last write (BaseException so that no
    `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Turn SIGINT/SIGTERM into Interrupted while a campaign runs (main thread only); once, then ignore. Inside
    `uninterrupted()` the Interrupted waits for the block's end."""

    deferring = 0  # uninterrupted() blocks open
    pending: int | None = None  # a signal that arrived inside one

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
        if _Signals.deferring:
            _Signals.pending = signum
            return
        raise Interrupted(signum)

    def __exit__(self, *exc):
        for s, h in self.saved.items():
            signal.signal(s, h)
        _Signals.pending = None
        return False


@contextmanager
def uninterrupted():
    """A step that must land whole (a case counted and its finding recorded: a signal between the two would leave
    a counted case whose finding --resume never sees); a signal meanwhile is raised as Interrupted at its end.
    Only for short steps: what it holds back is the user's Ctrl-C."""
    _Signals.deferring += 1
    try:
        yield
    finally:
        _Signals.deferring -= 1
    if not _Signals.deferring and _Signals.pending is not None:
        signum, _Signals.pending = _Signals.pending, None
        raise Interrupted(signum)


def shutdown(report, pre, worker) -> None:
    """Close the precompile helpers and the worker; a signal meanwhile marks the report and closing goes on
    (further signals are ignored by then: _Signals)."""
    for part in (pre, worker):
        if part is None:
            continue
        try:
            if part is pre:
                report.precompile = pre.summary()
            part.close()
        except Interrupted as e:
            report.interrupted = report.interrupted or str(e)
            part.kill()
    if worker is not None and (getattr(worker, "tainted", 0) or getattr(worker, "reaped", 0)):
        report.notes.append(
            "side effects contained (fuzz.runtime.sandbox): "
            f"{worker.tainted} worker restart(s) after a case changed torch "
            f"or the harness, {worker.reaped} process(es) a case left behind killed"
            + (f"; the latest: {worker.last_taint}" if getattr(worker, "last_taint", None) else "")
        )


def finish(report, triage, failure: BaseException | None) -> None:
    """Final root causes, then report.json, whatever arrives meanwhile; then the failure, if any, is raised."""
    try:
        if triage is not None and not report.interrupted and failure is None:
            with phases.phase("triage"):
                triage.finish(report)  # final root causes and time shares (fuzz.triage.triager)
    except Interrupted as e:
        report.interrupted = str(e)
    if not report.owned:  # interrupted while reading the report to resume: leave it as it is
        if failure is not None:
            raise failure
        return
    for _ in range(2):  # a signal during the first write: written again (signals are ignored from then on)
        try:
            report.write()
            break
        except Interrupted as e:
            report.interrupted = report.interrupted or str(e)
        except OutputError as e:
            failure = failure or e
            break
    else:
        return
    if isinstance(failure, OutputError) and report.saved_cases == report.cases:
        raise OutputError(f"{failure}; report.json was then written at case {report.cases}")
    if failure is not None:
        raise failure
