"""Intermittent failures: a case that fails on some runs and passes on others is one root cause, with a rate.

An implementation whose result differs at random between identical runs (an atomics race, a read of memory
that another launch may or may not have written, a deliberately flaky test implementation) would otherwise
give a root cause per occurrence: every minimiser step and every explaining flip "removes" the failure on the
runs that happen to pass, so each finding ends on a different, meaningless knob set. Triage therefore judges
a new finding's case again REJUDGE times before it minimises or explains anything
(`Triager.triage` calls `settle` first):

- every run fails: deterministic on this case; triage goes on as before;
- some run passes: intermittent. The first such finding of an implementation and kind family measures its
  failure rate over RATE_RUNS runs, reduces its case with the predicate "fails at least once in
  `runs_for(rate)` runs" (the simplest case first, then the minimiser, within the finding's triage budget),
  measures the minimal case's rate the same way and opens the family's `intermittent` root cause; later
  intermittent findings of that family join it (their REJUDGE runs are added to the cause's tally).

So an intermittent cause is never dropped and never one cause per occurrence; its rate is reported per run
of the case as triage judges it. The price: REJUDGE (2) more runs of every finding that triage opens a cause
for or attaches (a deterministic bug's later findings included); REJUDGE_FIRST (4) until the implementation
has a first cause, and up to REJUDGE_NOISY (10, stopping at the first pass) once it has shown an intermittent
one, where a lucky streak is likelier.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from moe_lora_fuzz.fuzz.judgement.oracle import PASSING, Verdict, family
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.triage.minimize import describe, minimize, same_failure

REJUDGE = 2  # more runs of a new finding's case: with the campaign's run, 3 identical runs must all fail
REJUDGE_FIRST = 4  # until a first cause is settled: a lucky first finding would open a cause on random outcomes
REJUDGE_NOISY = 10  # once an implementation has shown an intermittent failure, every later finding gets up to this
# many, stopping at the first pass: a judgement with twins calls it 2-3 times, so at 20% a call a run fails about
# half the time, and 10 runs all fail 0.1% of the time (a deterministic bug there costs the 10 runs)
RATE_RUNS = 10  # runs that measure a failure rate (the finding's case, then the minimal case)
MAX_RUNS_PER_TRY = 24  # a reduction is kept if it fails within runs_for(rate) runs, at most this many


def runs_for(rate: float) -> int:
    """Runs after which a case failing at `rate` has failed at least once with probability 99%."""
    if rate >= 1:
        return 1
    rate = max(rate, 1e-3)
    return max(1, min(MAX_RUNS_PER_TRY, math.ceil(math.log(0.01) / math.log(1 - rate))))


def _tally(
    judge, case: Case, target: dict, runs: int, deadline: float = math.inf, stop_on_pass: bool = False
) -> tuple[int, int, dict | None]:
    """(failures, runs done, one failing verdict) over up to `runs` judgements of `case` (stop_on_pass: until the
    first run that passes). Only a pass shows that a case fails at random: a run that fails otherwise ends the
    tally uncounted. So does a run the campaign's budget cut short (fuzz.campaign.budget.CappedWorker: it comes
    back a hang within 0.05 s): counted as a pass, it made a deterministic bug found as the budget ran out
    "intermittent"."""
    fails, done, seen = 0, 0, None
    for _ in range(runs):
        if done and time.monotonic() > deadline:
            break
        vd = judge(case)
        failed = same_failure(target, vd)
        if not failed and vd["kind"] not in PASSING:
            break
        done += 1
        if failed:
            fails += 1
            seen = seen or vd
        elif stop_on_pass:
            break
    return fails, done, seen


def key_of(impl: str, fam: str) -> str:
    return f"{fam}|intermittent|{impl}|fails on some runs of the same case"


def settle(triager, finding: dict, case: Case, vd: dict, judge, budget: float, *, fails: int = 1, runs: int = 1):
    """Judge `case` REJUDGE more times (`fails` of `runs` earlier runs failed like `vd`). Returns False when
    every run failed (deterministic: triage goes on), else True with finding["triage"] set: the intermittent
    cause's entry, or None when no run of the case failed (offline triage of a fixed implementation).
    `triager`: fuzz.triage.triager.Triager (its `intermittent` dict holds one cause per kind family)."""
    more = REJUDGE_NOISY if triager.intermittent else REJUDGE if triager.causes else REJUDGE_FIRST
    f, n, seen = _tally(judge, case, vd, more, stop_on_pass=True)
    fails, runs = fails + f, runs + n
    if fails == runs:
        return False
    fam = family(vd["kind"])
    cause = triager.intermittent.get(fam)
    if cause is not None:
        triager.attached += 1
        cause["tally"] = [cause["tally"][0] + fails, cause["tally"][1] + runs]
        finding["triage"] = dict(cause, via=f"intermittent: failed {fails} of {runs} identical runs")
        return True
    start = time.monotonic()
    deadline = start + max(budget, 0.0)
    more, done, seen2 = _tally(judge, case, vd, max(RATE_RUNS - runs, 0), deadline)
    fails, runs = fails + more, runs + done
    if not fails:
        triager.flaky += 1
        finding["triage"], finding["triage_note"] = None, f"did not fail in {runs} runs when judged again"
        return True
    vd = vd if "signature" in vd else (seen or seen2)  # offline: the target was only kind and failure
    rate = fails / runs if fails else 1 / (runs + 1)
    minimal, tries = _reduce(case, vd, judge, rate, triager.device == "cpu", deadline)
    m_fails, m_runs, m_vd = _tally(judge, minimal, vd, RATE_RUNS, deadline + budget)
    if not m_fails:  # the reduction's luck ran out on the measurement: keep the finding's own case
        minimal, m_fails, m_runs, m_vd = case, fails, runs, vd
    from moe_lora_fuzz.fuzz.records.repro import Repro, save

    name = Path(finding["repro"]).name.replace("repro-", "minimal-", 1)
    path = triager.out / name
    save(Repro(minimal, triager.impl, triager.device, Verdict(**m_vd), triager.env), path)
    m_rate = m_fails / m_runs
    info = {
        "key": key_of(triager.impl, fam),
        "impl": triager.impl,
        "kind": vd["kind"],
        "family": fam,
        "failure": vd.get("failure", ""),
        "trigger": (
            f"intermittent {fam}: the same case fails on some runs and passes on others; the minimal case "
            f"failed {m_fails} of {m_runs} runs ({m_rate:.0%}), the finding's case {fails} of {runs}"
        ),
        "essential": {},
        "flip_to": {},
        "disappears_with": [],
        "persists_with": [],
        "minimal_repro": str(path),
        "minimal_case": describe(minimal),
        "one_minimal": False,
        "dropped_class_knobs": [],
        "tries": tries,
        "seconds": round(time.monotonic() - start, 2),
        "verdict": {"kind": m_vd["kind"], "failure": m_vd.get("failure", ""), "message": m_vd.get("message", "")},
        "data_knobs": {},
        "explained": True,
        "via": f"intermittent: failed {fails} of {runs} identical runs",
        "class": "intermittent",
        "rate": round(m_rate, 3),
        "rate_runs": m_runs,
        "tally": [fails, runs],
    }
    triager.intermittent[fam] = info
    triager.minimised += 1
    finding["triage"] = info
    return True


def _reduce(case: Case, target: dict, judge, rate: float, interpreter: bool, deadline: float) -> tuple[Case, int]:
    """The smallest case that still fails at least once in runs_for(rate) runs: the simplest case with this
    data seed first (an implementation that fails at random anywhere ends there in a few runs), else the
    minimiser's walk under that predicate until the deadline."""
    runs = runs_for(rate)

    def fails_sometimes(c: Case) -> bool:
        return _tally(judge, c, target, runs, deadline)[0] > 0

    simplest = Case(seed=case.seed)
    try:
        simplest.validate(interpreter)
        if simplest != case and fails_sometimes(simplest):
            return simplest, 1
    except ValueError:
        pass
    left = deadline - time.monotonic()
    if left <= 0:
        return case, 1
    res = minimize(case, fails_sometimes, budget=left, interpreter=interpreter)
    return res.case, res.tries + 1
