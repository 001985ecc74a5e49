"""The campaign's time budget as a promise: a campaign ends by --budget plus GRACE of it (worker shutdown, the
last triage and the report included), whatever the implementation does.

- The CLI's budget counts from the process's start (`process_age`), a library caller's from run_campaign.
- No case is started after the budget; a case started before it may run on into the grace period, and no
  further: its timeout is cut to what is left. A case cut that way is not a finding (it did not run for the
  case timeout, so it is not known to hang): it is recorded as `cut_case` in the report and not counted, and
  `--resume` runs it again.
- Triage runs on a `CappedWorker`: every run's timeout is cut to what is left, a run that would first have to
  start a worker process (after a hang or a crash) and has no time for it is cut without starting one; and a
  hang's triage never waits the full case timeout again. The first run learned that it hangs and how long
  passing cases take here, so each re-run waits HANG_RERUN_FACTOR times the slowest passing case seen (at least
  HANG_RERUN_MIN_S): a re-run still running then is taken to hang the same way.
"""

from __future__ import annotations

import os
import time

GRACE = 0.10  # share of --budget a campaign may run past it
GRACE_MIN_S = 2.0  # ... but at least this (worker shutdown and the report take about a second)
SHUTDOWN_RESERVE_S = 1.0  # kept free at the end for closing the worker and writing the report
HANG_RERUN_FACTOR = 4.0
HANG_RERUN_MIN_S = 5.0
CUT_S = 0.05  # the timeout of a run the budget cut: it comes back a hang at once (fuzz.triage.intermittent)


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere): the CLI's budget counts from there, so
    importing torch and starting up are inside the promise."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


class Budget:
    def __init__(self, budget: float, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.deadline = self.start + budget  # no case starts after this
        self.hard_end = self.deadline + max(GRACE * budget, GRACE_MIN_S)  # everything is over by this
        self.slowest_pass = 0.0

    def left(self) -> float:
        """Seconds a run may still take (the shutdown reserve kept free)."""
        return self.hard_end - SHUTDOWN_RESERVE_S - time.monotonic()

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def case_timeout(self, full: float) -> float:
        return max(min(full, self.left()), 0.0)

    def passed(self, seconds: float) -> None:
        self.slowest_pass = max(self.slowest_pass, seconds)

    def hang_rerun(self, full: float) -> float:
        return min(full, max(HANG_RERUN_FACTOR * self.slowest_pass, HANG_RERUN_MIN_S))


class CappedWorker:
    """A campaign Worker as triage sees it: the same judge, with every timeout cut by the budget (and for a
    hang finding by what the first run learned). Everything else is the worker's."""

    def __init__(self, worker, budget: Budget, hang: bool):
        self._worker, self._budget, self._hang = worker, budget, hang

    def __getattr__(self, name):
        return getattr(self._worker, name)

    def judge(self, case, *, timeout: float, **kw):
        if self._hang:
            timeout = self._budget.hang_rerun(timeout)
        left = self._budget.left()
        must_start = getattr(self._worker, "must_start", None)  # tests' stand-in workers have no process
        start = must_start() if must_start else None
        if start is not None and left - start < CUT_S:  # no time to start a process (after a hang or a crash), let
            # alone run the case in it: cut as a run would be cut, without the start past the budget
            why = f"not run: {left:.1f} s of the budget left, a worker start takes {start:.1f} s"
            return self._worker.unanswered(case, "hang", why, kw.get("probe", ""))
        return self._worker.judge(case, timeout=max(min(timeout, left), CUT_S), **kw)
