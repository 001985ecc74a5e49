"""Triage: one root cause, one entry. Minimise each finding, explain it by single-knob flips, group.

For a new finding a campaign (or `moe-lora-fuzz triage DIR...` afterwards) does, within a bounded budget:
  1. attach: if an existing root cause of the same implementation, kind family and failure detail has
     essential knobs, and flipping each of them to its simplest value on this finding's case makes the
     failure disappear, the finding is that cause (a few runs, no minimisation);
  2. otherwise minimise (fuzz.triage.minimize, predicate `same_failure`) and read the essential knobs off the
     result: the knobs that differ from the simplest case and whose flip to the simplest value makes the
     failure disappear (the minimiser's rejected reductions, cached, so this is nearly free);
  3. differential explanation of the minimal case: the single-knob changes that make it disappear (split-K
     to 1 per stage, contiguous instead of strided, the other layout, mul_routed_weight off, fp32, and
     DIFFERENTIAL_HOOKS, where the GPU integration adds fp32 at IEEE instead of TF32);
  4. group: findings whose minimal cases agree (implementation, kind family, failure detail and the same
     set of essential knobs, see `root_key`) are one root cause; a minimal case that an existing cause's
     flips explain (step 1 on the minimal case) joins that cause, and so does a segfault whose minimiser
     met that cause's wrong values when the two differ only in sizes (`Triager._join`: one wild access).
A knob is essential only when its flip removes the failure for other draws of the data too (DATA_SEEDS):
a size that merely moved a token onto the slot that shows the bug is data, like the seed, and no part of
the key. A disagreement with the configuration twin is triaged as the twin's own case (the twin is the
wrong run), so the knobs only the twin had (split-K, block sizes) become visible to the minimiser.
When the budget runs out (a fresh GPU compiling, a CPU crash costing a worker restart per run), step 1
still runs, and a finding no cause explains is grouped provisionally, marked "untriaged: grouped by
signature": by kind family, failure detail and the class changes that remove it (a few runs, within a
grace of GRACE_SHARE; crashes and exceptions by their failure detail alone), from its minimiser's smaller
case when minimising was cut short. A cause found later re-attaches the provisional findings it explains;
`moe-lora-fuzz triage DIR` minimises the rest.
Grouping never merges by the case class; it can split one cause in two when two minimal cases reach
different, equally minimal knob sets that explain each other only partly, and it never merges findings
whose essential knobs differ by a flag, layout, dtype or launch knob: two independent bugs stay two.
"""

from __future__ import annotations

import json  # noqa: F401 (kept for callers of this module's namespace)
import time
from pathlib import Path

from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, family
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.triage.classify import counts
from moe_lora_fuzz.fuzz.triage.explain import (  # noqa: F401 (root_key, triage_case: callers import them from here)
    CLASS_FLIPS,
    DATA_KNOBS,
    DIFFERENTIAL_HOOKS,
    GRACE_SHARE,
    MIN_TRIAGE_S,
    MINIMISE_SHARE_OF_LEFT,
    TRIAGE_CAP_S,
    TRIAGE_SHARE,
    WILD_SIZES,
    Judge,
    Triaged,
    _applicable,
    _everywhere,
    _info,
    _targets,
    describe_knobs,
    explained_by,
    explained_by_several,
    flips,
    root_key,
    triage_case,
    wild_access,
)
from moe_lora_fuzz.fuzz.triage.grouping import group_findings, group_reports  # noqa: F401 (their home was here)
from moe_lora_fuzz.fuzz.triage.intermittent import settle
from moe_lora_fuzz.fuzz.triage.minimize import (
    describe,
    knob_values,
    same_failure,
    with_knob,
)


# ---- running cases for triage ---------------------------------------------------------------------------
class WorkerJudge:
    """Judges cases on a campaign worker (fuzz.campaign.runner.Worker, which restarts itself after a case that kills
    it: that case's verdict is a crash or a hang)."""

    def __init__(self, worker, device: str, impl: str, *, metamorphic: bool = False, timeout: float | None = None):
        from moe_lora_fuzz.fuzz.execution.worker import CASE_TIMEOUT_S

        self.worker, self.device, self.impl, self.metamorphic = worker, device, impl, metamorphic
        self.timeout = timeout or CASE_TIMEOUT_S[device]  # the full case timeout: running out of it is a hang

    def __call__(self, case: Case) -> dict:
        """Triage compares kind families, so a run skips what only refines the kind (the diagnosis reruns) and
        the permutation twin, unless twins found the failure (`metamorphic`): a third to a half of the runs
        of a wrong-output finding on the CPU interpreter."""
        quick = not self.metamorphic
        return self.worker.judge(case, timeout=self.timeout, metamorphic=self.metamorphic, quick=quick).to_dict()

    def thorough(self, case: Case) -> dict:
        """The full verdict (diagnosed: which out-of-bounds read), for a minimal case's report."""
        return self.worker.judge(case, timeout=self.timeout, metamorphic=self.metamorphic).to_dict()

    def ahead(self, cases: list) -> None:
        """Cases about to be judged: the campaign's precompile helpers, if any, compile them first."""
        hook = getattr(self.worker, "ahead", None)
        if hook is not None:
            hook(cases)

    @property
    def order(self):
        """The campaign's learned variant order for the minimiser's candidates (fuzz.campaign.variant_draw), if any."""
        return getattr(self.worker, "variant_order", None)

    def plain(self) -> "WorkerJudge":
        """The same judge without the configuration twin."""
        return WorkerJudge(self.worker, self.device, self.impl, timeout=self.timeout)


def twin_of(case: Case, vd: dict, judge: Judge) -> tuple[Case, Judge] | None:
    """For a disagreement with the configuration twin (fuzz.judgement.oracle._twin_cases): the twin's case and a judge
    without twins. The case passed its reference check and two runs within the bound agree, so the twin is
    the wrong run: triaged as a case of its own, what only the twin had (split-K, block sizes) is visible to
    the minimiser and to the flips. None for any other verdict, or when the judge cannot drop twins."""
    from moe_lora_fuzz.fuzz.judgement.oracle import _twin_cases

    if vd["kind"] != "metamorphic" or not vd.get("message", "").startswith("another configuration"):
        return None
    if not hasattr(judge, "plain"):
        return None
    return _twin_cases(case)[0], judge.plain()


def through_twin(case: Case, vd: dict, judge: Judge) -> tuple[Case, dict, Judge]:
    """The twin's case, its verdict and the plain judge (`twin_of`); unchanged when the twin alone passes."""
    twin = twin_of(case, vd, judge)
    if twin is None:
        return case, vd, judge
    tv = twin[1](twin[0])
    return (twin[0], tv, twin[1]) if family(tv["kind"]) else (case, vd, judge)


def class_flips_key(
    case: Case, vd: dict, judge: Judge, impl: str, interpreter: bool, deadline: float = float("inf")
) -> tuple[str, list] | None:
    """A provisional root key for a finding that could not be minimised: its kind family, failure detail and
    the class changes (split-K 1, contiguous, the other layout, mrw, dtype, the hooks) that make it
    disappear on its own case. At most one run per class knob; two bugs that different class changes remove
    stay apart, and different families never meet. Exceptions and crashes are grouped by their failure
    detail alone (exception type and first frame, or how the process died) with no run: that detail already
    names the failure, and every crashing run costs a worker restart. None when `deadline` (time.monotonic)
    passes before every flip ran: a partial set of flips could match another bug's."""
    gone: list = []
    fam, failure = family(vd["kind"]), vd.get("failure", "")
    if fam in ("exception", "crash"):
        return f"{fam}|{failure}|{impl}|untriaged: grouped by signature", gone
    for name, _, label, changed in flips(case):
        if name not in CLASS_FLIPS and label not in {lb for lb, _ in DIFFERENTIAL_HOOKS}:
            continue
        try:
            changed.validate(interpreter)
        except ValueError:
            continue
        if time.monotonic() > deadline:
            return None
        if not same_failure(vd, judge(changed)):
            gone.append(label)
    return f"{fam}|{failure}|{impl}|untriaged: grouped by signature: gone with {','.join(gone) or 'none'}", gone


class Triager:
    """Triage of one implementation's findings, in order: attach to a known cause or minimise."""

    def __init__(self, impl: str, device: str, out: Path, environment: dict):
        self.impl, self.device, self.out, self.env = impl, device, out, environment
        self.causes: list[dict] = []  # info dicts of minimised findings that opened a root cause
        self.reps: list[dict] = []  # every explained minimal case of those causes: one defect can fail in two
        # ways (topk-row-index: mrw with per_token, or per_routed without mrw), and each way has its flips
        self.known: dict = {}  # minimal case -> Triaged of every explained minimisation
        self.minimised = self.attached = self.flaky = self.provisional = 0
        self.pending: list = []  # (finding, case, verdict) grouped provisionally: a later cause may explain them
        self.intermittent: dict = {}  # kind family -> the intermittent cause's info (fuzz.triage.intermittent)

    def triage(
        self,
        finding: dict,
        case: Case,
        vd: dict,
        judge: Judge,
        budget: float,
        minimise_budget: float | None = None,
        *,
        attach_only: bool = False,
        grace_s: float = float("inf"),
    ) -> dict | None:
        """Fill finding["triage"]; returns it (None when the finding did not fail again or was not triaged:
        finding["triage_note"] says which). A finding no known cause explains is minimised when the budget
        allows it, else grouped provisionally (`class_flips_key`, at most `grace_s` seconds past the budget);
        with `attach_only` it stays untriaged."""
        interpreter = self.device == "cpu"
        start = time.monotonic()
        finding.pop("triage_note", None)
        if settle(self, finding, case, vd, judge, budget):  # fails on some runs only: intermittent
            return finding["triage"]
        raw = case
        tw = twin_of(case, vd, judge)
        if tw:  # attach first with the wrong values the disagreement implies: no run to judge the twin
            several = self._explaining(tw[0], {"kind": "mismatch", "failure": ""}, tw[1])
            if several:
                case, judge = tw
            else:
                case, vd, judge = through_twin(case, vd, judge)
                if case is raw:  # the twin alone passes: the metamorphic finding as it is
                    several = self._explaining(case, vd, judge)
        else:
            several = self._explaining(case, vd, judge)
        if not several:  # a run or two, like the attach above
            several = self._through_core(case, vd, judge)
        twin = " (the configuration twin's case)" if case is not raw else ""
        if several:
            self.attached += 1
            via = "explained by " + " and ".join(c["minimal_repro"] for c in several)
            if "core" in several[0]:
                via += f" ({several[0].pop('core')})"
            if _everywhere(several[0]):
                where = several[0]["minimal_repro"]
                via = f"joins {where} without a run: it fails on the simplest case, where minimising ends"
            finding["triage"] = dict(several[0], via=via + twin, also=[c["key"] for c in several[1:]])
            return finding["triage"]
        if attach_only:
            finding["triage"], finding["triage_note"] = None, "not triaged: no known cause explains it"
            return None
        left = min(budget - (time.monotonic() - start), budget if minimise_budget is None else minimise_budget)
        deadline = start + max(budget, 0.0) + grace_s
        if left < MIN_TRIAGE_S:
            return self._provisional(finding, case, vd, judge, start, deadline)
        tri = triage_case(case, judge, vd, budget=left, interpreter=interpreter, known=self.known)
        if tri is None:  # three runs failed, this one passed
            settle(self, finding, case, vd, judge, budget, fails=3, runs=4)
            return finding["triage"]
        self.minimised += 1
        name = Path(finding["repro"]).name.replace("repro-", "minimal-", 1)
        path = self.out / name
        from moe_lora_fuzz.fuzz.records.repro import Repro, save

        save(Repro(tri.minimal, self.impl, self.device, Verdict(**tri.verdict), self.env), path)
        info = _info(tri, self.impl, str(path))
        info["via"] += twin
        finding["triage"] = info
        if tri.explained:
            self.known.setdefault(tri.minimal, tri)
            if any(c["key"] == info["key"] for c in self.causes):
                if all(r["flip_to"] != info["flip_to"] for r in self.reps if r["key"] == info["key"]):
                    self.reps.append(info)
                return info
        joined = self._join(tri, judge)
        if joined:
            info.update(key=joined[0]["key"], via=f"{info['via']}; {joined[1]}")
            if tri.explained and joined[0]["family"] == info["family"]:
                self.reps.append(info)  # another way the cause shows: its flips explain later findings
        elif tri.explained:
            self.causes.append(info)
            self.reps.append(info)
            self._reattach(info, judge)
        else:  # the budget ran out before the flips: grouped provisionally, from the smaller case
            grouped = class_flips_key(tri.minimal, tri.verdict, judge, self.impl, interpreter, deadline)
            if grouped is None:
                return info  # no time for the class flips either: its own entry ("not explained")
            key, gone = grouped
            gone_text = f"disappears with {', '.join(gone)}" if gone else "no class change removes it"
            info.update(
                key=key,
                via=f"provisional ({info['via']}, not explained)",
                disappears_with=gone,
                trigger=f"{info['trigger']}; grouped by signature: {gone_text}",
            )
            self.provisional += 1
            self.pending.append((finding, tri.minimal, tri.verdict))
        return info

    def _reattach(self, cause: dict, judge: Judge) -> None:
        """A new cause may explain findings grouped provisionally before it existed (a few runs each)."""
        interpreter = self.device == "cpu"
        for item in list(self.pending):
            finding, case, vd = item
            same = cause["family"] == family(vd["kind"]) and cause["failure"] == vd.get("failure", "")
            if same and explained_by(case, judge, cause, interpreter):
                self.pending.remove(item)
                was = finding["triage"]["via"]
                finding["triage"] = dict(cause, via=f"explained by {cause['minimal_repro']} (was {was})")
                finding.pop("triage_note", None)

    def _join(self, tri: Triaged, judge: Judge) -> tuple[dict, str] | None:
        """A known cause that explains this finding's minimal case (also one the budget left unexplained):
        - of the same family: its flips remove the failure (the minimiser reached other, equally minimal
          knobs of that cause, e.g. another size that moves the padded length);
        - of the same family, both explained: they share an essential knob and differ only in WILD_SIZES (the
          padded length misses a block multiple through num_experts=2 in one minimal case, through
          align_slack=1 or strided rows in another: three equally minimal ways one stride bug shows, none
          of which the others' flips can undo). Two bugs that share a knob and differ only in such sizes are
          merged too: flips cannot tell "needs A, and B or C" from two bugs "A and B", "A and C";
        - across a wild access (`wild_access`: a segfault and wrong values): the minimiser met that cause's
          failure on its way (one reduction turned this failure into that one), and every flip of the
          cause's essential knobs that applies here removes this failure too. Two independent bugs meet
          both tests only if one reduction of this finding shows the other bug and they share the knobs;
          so the two may differ only in sizes (WILD_SIZES: they move where the access lands), never in a
          flag, layout, dtype or launch knob (another code path)."""
        interpreter = self.device == "cpu"
        mine = set(tri.essential) - set(DATA_KNOBS)
        for rep in self.reps:
            same = rep["family"] == family(tri.verdict["kind"]) and rep["failure"] == tri.verdict.get("failure", "")
            if same and explained_by(tri.minimal, judge, rep, interpreter):
                return rep, f"explained by {rep['minimal_repro']}"
            theirs = set(rep["essential"]) - set(DATA_KNOBS)
            if same and tri.explained and mine & theirs and (mine ^ theirs) <= set(WILD_SIZES):
                return rep, (
                    f"the same defect as {rep['minimal_repro']}: both need {', '.join(sorted(mine & theirs))}, and "
                    f"they differ only in sizes that decide where it shows ({', '.join(sorted(mine ^ theirs))})"
                )
        if not wild_access(tri.verdict):
            return None
        for cause in self.causes:
            if cause["family"] == family(tri.verdict["kind"]) or not wild_access(cause["verdict"]):
                continue
            met = any(same_failure(cause["verdict"], o) for o in tri.others)
            mine = set(tri.essential) if tri.explained else set(describe_knobs(tri.minimal))
            routes = (mine ^ set(cause["essential"])) - set(DATA_KNOBS)
            if not met or not routes <= set(WILD_SIZES):
                continue
            if explained_by(tri.minimal, judge, cause, interpreter, failure=tri.verdict):
                return cause, (
                    f"the same wild access as {cause['minimal_repro']}: minimising met its {cause['kind']}, "
                    "and its flips remove this failure too"
                )
        return None

    def _core(self, key: str, fam: str) -> tuple[dict, set] | None:
        """For a cause reached through several equally minimal knob sets (`_join`): the knobs all of them need,
        with the values that remove it, and the class changes that removed any of them. None for a cause
        minimised one way only (its own flips are the test)."""
        reps = [r for r in self.reps if r["key"] == key and r["family"] == fam]
        if len(reps) < 2:
            return None
        names = set.intersection(*(set(_targets(r)) for r in reps))
        gone = set().union(*(r["disappears_with"] for r in reps))
        return {n: _targets(reps[0])[n] for n in names}, gone

    def _through_core(self, case: Case, vd: dict, judge: Judge) -> list[dict]:
        """Attach a finding to a cause with several minimal forms (`_core`) when none of them applies to its
        case (a full-size case keeps the padded length off a block multiple through several sizes at once,
        so no one form's flip removes it): every flip of the knobs all forms share removes this failure,
        and it survives every class change that none of the forms needed, made at once (a bug that needs
        a flag, layout, dtype or split-K stays apart; strided rows may differ, like the forms' sizes). A run
        per shared knob and one more. [] when no cause takes it."""
        interpreter = self.device == "cpu"
        values = knob_values(case)
        for key in dict.fromkeys(r["key"] for r in self._same(vd)):
            core = self._core(key, family(vd["kind"]))
            if core is None or not core[0] or any(values[n] == v for n, v in core[0].items()):
                continue
            flipped = [with_knob(case, n, v) for n, v in core[0].items()]
            others = case
            for name, value, label, _ in flips(case):
                if name in CLASS_FLIPS and name not in WILD_SIZES and label not in core[1]:
                    others = with_knob(others, name, value)
            try:
                flipped = [c.validate(interpreter) for c in flipped]
                others = others.validate(interpreter) if others != case else None
            except ValueError:
                continue
            for c in flipped + [others]:
                if c is None:
                    continue
                if same_failure(vd, judge(c)) != (c is others):
                    break
            else:
                rep = next(r for r in self.reps if r["key"] == key)
                shared = ", ".join(sorted(core[0]))
                return [dict(rep, core=f"its forms share {shared}, whose flips remove this failure")]
        return []

    def _same(self, vd: dict) -> list[dict]:
        return [c for c in self.causes if c["family"] == family(vd["kind"]) and c["failure"] == vd.get("failure", "")]

    def _explaining(self, case: Case, vd: dict, judge: Judge) -> list[dict]:
        """The known causes that explain `case` (attach: a few runs, no minimisation), [] when none does.
        A cause that fails on the simplest case takes every finding of its family and failure detail without
        a run: minimising any of them would end on that case (it fails that way), i.e. on that cause."""
        interpreter = self.device == "cpu"
        everywhere = [c for c in self._same(vd) if _everywhere(c)]
        if everywhere:
            return everywhere[:1]
        usable = {}  # key -> the first representative whose flips apply to this case
        for rep in self.reps:
            if rep["family"] == family(vd["kind"]) and rep["failure"] == vd.get("failure", ""):
                if _applicable(case, rep):
                    usable.setdefault(rep["key"], rep)
        usable = list(usable.values())
        several = explained_by_several(case, judge, usable, interpreter) if len(usable) > 1 else usable
        if len(several) == 1 and not explained_by(case, judge, several[0], interpreter):
            return []
        return several

    def _provisional(
        self, finding: dict, case: Case, vd: dict, judge: Judge, start: float, deadline: float
    ) -> dict | None:
        """No budget to minimise: group by kind family, failure detail and the class changes that remove it."""
        grouped = class_flips_key(case, vd, judge, self.impl, self.device == "cpu", deadline)
        if grouped is None:
            finding["triage"], finding["triage_note"] = None, "not triaged: triage budget spent"
            return None
        key, gone = grouped
        self.provisional += 1
        cls = (
            f"disappears with {', '.join(gone)}" if gone else "no split-K/contiguous/layout/mrw/dtype change removes it"
        )
        finding["triage"] = {
            "key": key,
            "impl": self.impl,
            "kind": vd["kind"],
            "family": family(vd["kind"]),
            "failure": vd.get("failure", ""),
            "trigger": f"{vd['kind']}: untriaged, grouped by signature (the triage budget was spent); {cls}",
            "essential": {},
            "flip_to": {},
            "disappears_with": gone,
            "persists_with": [],
            "minimal_repro": finding["repro"],
            "minimal_case": describe(case),
            "one_minimal": False,
            "dropped_class_knobs": [],
            "tries": 0,
            "seconds": round(time.monotonic() - start, 2),
            "verdict": {"kind": vd["kind"], "failure": vd.get("failure", ""), "message": vd.get("message", "")},
            "via": "provisional",
        }
        finding["triage_note"] = "not minimised: triage budget spent (grouped by signature)"
        self.pending.append((finding, case, vd))
        return finding["triage"]


class CampaignTriage:
    """The campaign's side of triage: a share of the budget overall and a cap per finding."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.share = cfg.triage_share
        if self.share is None:  # a campaign that stops after N findings (benchmarks, quality tests) wants the
            self.share = 0.0 if cfg.stop_after is not None else TRIAGE_SHARE  # findings fast, not their triage
        self.cap = TRIAGE_CAP_S[cfg.device] if cfg.triage_cap is None else cfg.triage_cap
        self.spent = 0.0
        self.untriaged = 0
        self.triager: Triager | None = None

    def after_finding(self, report, case: Case, vd: dict, worker) -> None:
        """Triage the finding just recorded for `vd` (a verdict as a dict), judging on the campaign's worker."""
        cfg = self.cfg
        finding = report.findings[vd["signature"]]
        if self.triager is None:
            self.triager = Triager(cfg.impl, cfg.device, cfg.out, report.env)
        left_campaign = cfg.budget - (time.time() - report.started)
        left = min(self.cap, self.share * cfg.budget - self.spent, left_campaign)
        start = time.monotonic()
        judge = WorkerJudge(worker, cfg.device, cfg.impl, metamorphic=vd["kind"] == "metamorphic", timeout=cfg.timeout)
        try:
            grace = self.spent < (self.share + GRACE_SHARE) * cfg.budget  # with the share spent: attach or group
            if self.share > 0 and grace:  # found as the campaign ran out: only attach (a run or two)
                left = max(left, 0.0)
                grace_s = min((self.share + GRACE_SHARE) * cfg.budget - self.spent, max(left_campaign, 0.0)) - left
                self.triager.triage(
                    finding,
                    case,
                    vd,
                    judge,
                    left,
                    MINIMISE_SHARE_OF_LEFT * left,
                    attach_only=left_campaign <= 0,
                    grace_s=max(grace_s, 0.0),
                )
            else:
                finding["triage"] = None
                why = "triage is off" if self.share == 0 else "triage budget spent"
                finding["triage_note"] = f"not triaged: {why}"
            if finding.get("triage_note", "").startswith("not triaged"):
                self.untriaged += 1
                if left_campaign < min(self.cap, self.share * cfg.budget - self.spent):
                    finding["triage_note"] = "not triaged: found as the campaign's budget ran out"
        finally:
            self.spent += time.monotonic() - start
            self.finish(report)

    def finish(self, report) -> None:
        """Root causes and triage accounting into the report (also called after every finding)."""
        report.root_causes = group_findings(list(report.findings.values()), self.cfg.impl)
        elapsed = max(time.time() - report.started, 1e-9)
        t = self.triager
        report.triage = {
            "share_limit": self.share,
            "cap_per_finding_s": self.cap,
            "seconds": round(self.spent, 2),
            "share_of_campaign": round(self.spent / elapsed, 3),
            "cases_per_s_excluding_triage": round(report.cases / max(elapsed - self.spent, 1e-9), 3),
            "minimised": t.minimised if t else 0,
            "attached": t.attached if t else 0,
            "not_reproduced": t.flaky if t else 0,
            "grouped_by_signature": t.provisional if t else 0,
            "not_triaged": self.untriaged,
            "untriaged_root_causes": sum(not c.get("triaged", True) for c in report.root_causes),
            "classes": counts(report.root_causes),
        }
