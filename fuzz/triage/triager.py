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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, family
from moe_lora_fuzz.fuzz.space.case import LAYOUTS, Case
from moe_lora_fuzz.fuzz.triage.classify import counts
from moe_lora_fuzz.fuzz.triage.grouping import group_findings, group_reports  # noqa: F401 (their home was here)
from moe_lora_fuzz.fuzz.triage.intermittent import settle
from moe_lora_fuzz.fuzz.triage.minimize import (
    SIMPLEST,
    describe,
    knob_values,
    minimize,
    same_failure,
    with_knob,
)

# Budget: minimising one finding on the CPU interpreter takes 8-23 s (README, 60 s minimiser budget), a
# root cause needs one minimisation and every later finding of it only an attach check (a few runs), so 20%
# of a campaign pays for several causes without costing the search more than a fifth of its cases. The
# per-finding cap stops one slow finding (large shapes, hangs) from taking the whole share; on the GPU a
# try costs milliseconds once compiled, so 20 s is hundreds of tries.
TRIAGE_SHARE = 0.2
TRIAGE_CAP_S = {"cpu": 30.0, "cuda": 20.0}
MIN_TRIAGE_S = 1.0  # below this there is no point starting a minimisation
MINIMISE_SHARE_OF_LEFT = 0.5  # one minimisation takes at most half of what is left, so later findings can
# still be attached (a few runs) or minimised
DIFF_RESERVE = 0.2  # share of a finding's budget kept for the differential flips after minimising
FREE_FLIPS = 3  # at most this many untried flips of a minimal case run even when its budget is spent
# Once the share is spent, attaching to a known cause (a run or two a finding) and provisional grouping (a
# few runs) may take this much more of the budget, so that one bug stays one entry on a GPU whose share went
# to compiling; past it a finding stays untriaged. On the CPU interpreter a judged failure costs several
# runs (diagnosis, twins), so a campaign with many findings reaches it: then at most 40% goes to triage.
GRACE_SHARE = 0.2

# (label, function case -> changed case or None when it does not apply): extra single-knob changes of the
# differential explanation. The GPU integration appends ("fp32 at IEEE instead of TF32", ...) here.
DIFFERENTIAL_HOOKS: list[tuple[str, Callable[[Case], Case | None]]] = []

# Root keys: knobs that shape the same thing count as one (m, top_k and num_experts together decide the
# routed pairs and the padded align length; real_rank is the rank the data uses), a block size whose
# related size is also essential is only the other side of that threshold (rank 17 > BLOCK_K 16 and rank
# 33 > BLOCK_K 32 are one trigger), and the data seed is never part of a key (every finding has its own).
KEY_GROUPS = {"real_rank": "rank", "m": "pairs", "top_k": "pairs", "num_experts": "pairs"}
RELATIONS = (
    ("k_dim", "shrink.block_k"),
    ("rank", "shrink.block_n"),
    ("rank", "expand.block_k"),
    ("n_dim", "expand.block_n"),
    ("m", "block_m"),
    ("top_k", "block_m"),
    ("num_experts", "block_m"),
)
DATA_KNOBS = ("seed",)
# Other data draws tried on a knob's flip before the knob counts as essential: a bug that one draw in three
# shows (a token on the one disabled slot of three) is missed by all 5 with probability 0.13, and a knob
# that really matters costs 5 runs. Only knobs that shape the drawn data (sizes, routing, slotting) are
# tried: flags and launch knobs do not change the data.
DATA_SEEDS = 5
DATA_SHAPING = ("m", "top_k", "num_experts", "num_slots", "rank", "real_rank", "k_dim", "n_dim", "num_slices")
DATA_SHAPING += ("offset", "extra_cols", "routing", "slotting")
CLASS_FLIPS = ("shrink.split_k", "expand.split_k", "strided", "layout", "mul_routed_weight", "dtype")

Judge = Callable[[Case], dict]  # a case -> its verdict as a dict (Verdict.to_dict)


# ---- one finding ------------------------------------------------------------------------------------
def root_key(impl: str, fam: str, failure: str, essential) -> str:
    """What makes two minimal cases "agree": implementation, kind family, failure detail, essential knobs
    (grouped and without the data seed, see KEY_GROUPS)."""
    names = set(essential)
    for size, block in RELATIONS:
        if size in names:
            names.discard(block)
    groups = sorted({KEY_GROUPS.get(n, n) for n in names if n not in DATA_KNOBS})
    return f"{fam}|{failure}|{impl}|{','.join(groups) or '(simplest case)'}"


def flips(case: Case) -> list[tuple[str, object, str, Case]]:
    """(knob, value it is set to, label, changed case) for every single-knob change of the differential:
    each knob that is not at its simplest value back to it, the other layout, mul_routed_weight on, and the
    hooks (knob = label)."""
    out = []
    for name, value in knob_values(case).items():
        if value != SIMPLEST[name]:
            out.append((name, SIMPLEST[name], f"{name}={SIMPLEST[name]!r}", with_knob(case, name, SIMPLEST[name])))
    if case.layout == LAYOUTS[0]:
        out.append(("layout", LAYOUTS[1], f"layout={LAYOUTS[1]!r}", case.replace(layout=LAYOUTS[1])))
    if not case.mul_routed_weight:  # both values of the flag: a row index chosen by the flag instead of the
        # layout fails as (mrw, per_token) and as (no mrw, per_routed); both then need {layout, mrw}
        out.append(("mul_routed_weight", True, "mul_routed_weight=True", case.replace(mul_routed_weight=True)))
    for label, hook in DIFFERENTIAL_HOOKS:
        changed = hook(case)
        if changed is not None:
            out.append((label, None, label, changed))
    return out


@dataclass
class Triaged:
    """One finding after minimisation and explanation."""

    minimal: Case
    verdict: dict  # the minimal case's verdict
    essential: dict  # knob -> its value in the minimal case
    flip_to: dict  # essential knob -> the value that made the failure disappear
    disappears_with: list  # labels of the single-knob changes that make the failure go away
    persists_with: list  # labels of those tried that still fail
    one_minimal: bool
    tries: int
    seconds: float
    dropped: list  # old-signature (class) knobs the minimiser dropped
    explained: bool = True  # every single-knob change was tried (else the budget ran out first)
    data_knobs: dict = field(default_factory=dict)  # knob -> value: its flip removed the failure only for
    # this draw of the data (another seed fails again), so it is not essential
    others: list = field(default_factory=list, repr=False)  # verdicts of other failures met while minimising

    def key(self, impl: str) -> str:
        if not self.explained:  # essential knobs unknown: a root cause of its own, never merged
            return (
                f"{family(self.verdict['kind'])}|{self.verdict.get('failure', '')}|{impl}|"
                f"not explained: {describe(self.minimal)}"
            )
        return root_key(impl, family(self.verdict["kind"]), self.verdict.get("failure", ""), self.essential)

    def trigger(self) -> str:
        if not self.explained:
            return (
                f"{self.verdict['kind']}: smallest case reached {describe(self.minimal)}; not explained "
                "(the triage budget ran out first)"
            )
        line = trigger_line(self.verdict, self.essential, self.disappears_with, self.one_minimal)
        if self.data_knobs:
            shown = " ".join(f"{k}={v!r}" for k, v in self.data_knobs.items())
            line += f"; {shown} only chose the data (other seeds fail without it)"
        return line


def trigger_line(vd: dict, essential: dict, disappears: list, one_minimal: bool = True) -> str:
    """One line: what the failure needs and which single changes make it go away."""
    parts, used = [], set()
    for size, block in RELATIONS:
        if size in essential and block in essential and essential[size] > essential[block]:
            parts.append(f"{size}={essential[size]} > {block}={essential[block]}")
            used |= {size, block}
    for name, value in essential.items():
        if name in used:
            continue
        if name in DATA_KNOBS:
            parts.append(f"this data ({name}={value})")
        elif value is True:
            parts.append(name)
        else:
            parts.append(f"{name}={value!r}")
    head = f"raises {vd['failure']}" if vd.get("failure") else vd["kind"]
    needs = f"needs {' and '.join(parts)}" if parts else "fails on the simplest case"
    hooks = {label for label, _ in DIFFERENTIAL_HOOKS}
    cls = [d for d in disappears if d.split("=")[0] in CLASS_FLIPS or d in hooks]
    gone = f"disappears with {', '.join(cls)}" if cls else "no split-K/contiguous/layout/mrw/dtype change removes it"
    return f"{head}: {needs}; {gone}" + ("" if one_minimal else " (budget ran out: not proven minimal)")


def triage_case(
    case: Case,
    judge: Judge,
    target: dict,
    *,
    budget: float,
    interpreter: bool,
    progress: Callable[[str], None] | None = None,
    known: dict | None = None,
) -> Triaged | None:
    """Minimise `case` while it fails like `target`, then explain the minimal case. None when the case does
    not fail that way when judged again (a flaky finding). `known`: minimal case -> its Triaged, from
    earlier findings: reaching one ends the walk and reuses its explanation."""
    start = time.monotonic()
    verdicts: dict = {}

    others: list = []  # verdicts of another failure family met on the way (see Triager._join)

    def still_fails(c: Case) -> bool:
        vd = judge(c)
        if same_failure(target, vd):
            verdicts[c] = vd
            return True
        if family(vd["kind"]):
            others.append(vd)
        return False

    if not still_fails(case):
        return None
    known = known or {}
    res = minimize(
        case,
        still_fails,
        budget=budget * (1 - DIFF_RESERVE),
        interpreter=interpreter,
        progress=progress,
        known=lambda c: c in known,
        ahead=getattr(judge, "ahead", None),
        keep_variant_first=not interpreter,  # a GPU compiles every new variant: sizes and data first
    )
    if res.case in known:
        old = known[res.case]
        return Triaged(
            res.case,
            verdicts[res.case],
            old.essential,
            old.flip_to,
            old.disappears_with,
            old.persists_with,
            old.one_minimal,
            res.tries,
            time.monotonic() - start,
            _dropped(case, res.case),
            old.explained,
            old.data_knobs,
            others,
        )
    if hasattr(judge, "thorough"):  # the minimal case's verdict as a report shows it (diagnosed)
        full = judge.thorough(res.case)
        if same_failure(target, full):
            verdicts[res.case] = full
    disappears, persists, essential, targets = [], [], {}, {}
    explained = True
    values = knob_values(res.case)
    changes = flips(res.case)
    # a 1-minimal case leaves only the other layout, mrw on and the hooks untried: so few runs of a small case
    # that they run even past the budget, rather than leave a cause unexplained (it could then explain nothing)
    few = sum(changed not in res.outcomes for *_, changed in changes) <= FREE_FLIPS
    for name, target_value, label, changed in changes:
        outcome = res.outcomes.get(changed, "untried")
        if outcome == "untried":
            if time.monotonic() - start > budget and not few:
                explained = False
                continue
            try:
                changed.validate(interpreter)
                outcome = still_fails(changed)
            except ValueError:
                outcome = None
        if outcome is None:
            continue  # the change is not a valid case
        (persists if outcome else disappears).append(label)
        if not outcome and name in values:
            essential[name], targets[name] = values[name], target_value
    data_knobs = {}
    for name in [n for n in essential if n in DATA_SHAPING]:
        # out of time: the knob stays essential (a cause may split in two, never merge with another)
        if _only_this_data(with_knob(res.case, name, targets[name]), still_fails, start + budget):
            data_knobs[name] = essential.pop(name)
            del targets[name]
    return Triaged(
        res.case,
        verdicts[res.case],
        essential,
        targets,
        disappears,
        persists,
        res.one_minimal,
        res.tries,
        time.monotonic() - start,
        _dropped(case, res.case),
        explained,
        data_knobs,
        others,
    )


def _only_this_data(flipped: Case, still_fails: Callable[[Case], bool], deadline: float) -> bool:
    """Whether the failure comes back on the flipped case with other data (seeds seed^1 .. seed^DATA_SEEDS):
    then the flipped knob only chose a draw that shows the bug."""
    for i in range(1, DATA_SEEDS + 1):
        if time.monotonic() > deadline:
            return False
        if still_fails(flipped.replace(seed=flipped.seed ^ i)):
            return True
    return False


def _dropped(start: Case, end: Case) -> list:
    from moe_lora_fuzz.fuzz.triage.minimize import dropped_class_knobs

    return dropped_class_knobs(start, end)


def _targets(cause: dict) -> dict:
    """The cause's essential knobs and the values that made its failure disappear, less those a root key
    ignores (the data seed; a block size whose related size is essential: another case of the same cause
    may cross that threshold with another block size)."""
    names = set(cause["flip_to"])
    thresholds = {block for size, block in RELATIONS if size in names}
    return {
        n: tuple(v) if isinstance(v, list) else v  # a JSON round trip turned `disabled` into a list
        for n, v in cause["flip_to"].items()
        if n not in DATA_KNOBS and n not in thresholds
    }


def _everywhere(cause: dict) -> bool:
    """An explained cause whose minimal case is the simplest case (no essential knob, not even data)."""
    return cause.get("explained", True) and not cause["essential"] and not cause.get("data_knobs")


def _applicable(case: Case, cause: dict) -> bool:
    """A case that already has one of the cause's disappearing values cannot be that cause; a cause with
    no essential knob explains nothing (it would swallow every other bug)."""
    values, targets = knob_values(case), _targets(cause)
    return bool(targets) and all(values[n] != v for n, v in targets.items())


def _without(case: Case, causes: list[dict], interpreter: bool) -> Case | None:
    """The case with every essential knob of `causes` set to its disappearing value (None if invalid)."""
    for cause in causes:
        for name, target in _targets(cause).items():
            case = with_knob(case, name, target)
    try:
        return case.validate(interpreter)
    except ValueError:
        return None


def explained_by(case: Case, judge: Judge, cause: dict, interpreter: bool, failure: dict | None = None) -> bool:
    """Whether `case` fails because of `cause` (a root-cause info dict): setting each of the cause's
    essential knobs, one at a time, to the value that made the cause's failure disappear also makes this
    case's failure disappear. `failure` (a verdict of another family, see `Triager._join`): only the
    flips that apply to the case are tried (at least one), and it is that failure which must disappear."""
    targets = _targets(cause)
    if failure is None and not _applicable(case, cause):
        return False
    if failure is not None:
        values = knob_values(case)
        targets = {n: v for n, v in targets.items() if values[n] != v}
        if not targets:
            return False
    for name, target in targets.items():
        changed = with_knob(case, name, target)
        try:
            changed.validate(interpreter)
        except ValueError:
            return False
        if same_failure(failure or cause["verdict"], judge(changed)):
            return False
    return True


# sizes that move where a wild access lands (num_slices is not one: a second slice is another code path); row
# strides (strided inputs, align_slack's longer align rows) move it as much as a size does
WILD_SIZES = ("m", "top_k", "num_experts", "num_slots", "rank", "real_rank", "k_dim", "n_dim", "offset")
WILD_SIZES += ("extra_cols", "align_slack", "strided")


def describe_knobs(case: Case) -> list:
    """The knobs of a case away from their simplest value."""
    return [k for k, v in knob_values(case).items() if v != SIMPLEST[k]]


def wild_access(vd: dict) -> bool:
    """Failures one wild memory access gives, depending on how far it lands and on the data: wrong values
    (mismatch, oob-read, vacuous, ...) near the buffer, a segfault far from it."""
    fam = family(vd["kind"])
    return fam == "wrong-output" or (fam == "crash" and vd.get("failure", "").startswith("exit-"))


def explained_by_several(case: Case, judge: Judge, causes: list[dict], interpreter: bool) -> list[dict]:
    """A case that shows two known causes at once survives every single cause's flips. It is explained by
    a set of causes when removing all of theirs makes the failure disappear and removing all but any one
    of them does not (each is needed). Returns that set, or [] when there is none. 1 + len(causes) runs,
    fewer than trying each cause alone first when several apply."""
    usable = [c for c in causes if _applicable(case, c)]
    cleared = _without(case, usable, interpreter)
    if cleared is None or same_failure(usable[0]["verdict"], judge(cleared)):
        return []
    needed = []
    for i, cause in enumerate(usable):
        others = _without(case, usable[:i] + usable[i + 1 :], interpreter)
        if others is not None and same_failure(cause["verdict"], judge(others)):
            needed.append(cause)
    return needed


# ---- grouping -----------------------------------------------------------------------------------------
def _info(tri: Triaged, impl: str, minimal_repro: str) -> dict:
    """What a report keeps of a finding's triage (JSON), enough to group it offline."""
    vd = tri.verdict
    return {
        "key": tri.key(impl),
        "impl": impl,
        "kind": vd["kind"],
        "family": family(vd["kind"]),
        "failure": vd.get("failure", ""),
        "trigger": tri.trigger(),
        "essential": tri.essential,
        "flip_to": tri.flip_to,
        "disappears_with": tri.disappears_with,
        "persists_with": tri.persists_with,
        "minimal_repro": minimal_repro,
        "minimal_case": describe(tri.minimal),
        "one_minimal": tri.one_minimal,
        "dropped_class_knobs": tri.dropped,
        "tries": tri.tries,
        "seconds": round(tri.seconds, 2),
        "verdict": {"kind": vd["kind"], "failure": vd.get("failure", ""), "message": vd.get("message", "")},
        "data_knobs": tri.data_knobs,
        "explained": tri.explained,
        "via": "minimised",
    }


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


# ---- offline: moe-lora-fuzz triage DIR... ------------------------------------------------------------------
class TriageError(Exception):
    """A directory or report that cannot be triaged (usage error, exit 2)."""


def _repro_path(raw: str, directory: Path) -> Path:
    p = Path(raw)
    return p if p.is_file() else directory / p.name


def _settled(finding: dict) -> bool:
    """Triaged and explained: offline triage leaves it alone (the rest are triaged again)."""
    info = finding.get("triage")
    return bool(info) and "|not explained: " not in info["key"] and not info["via"].startswith("provisional")


def _opened_a_cause(info: dict) -> bool:
    """Minimised into a new root key (not attached, not explained by a cause found before it)."""
    return info["via"].startswith("minimised") and "explained by" not in info["via"]


def triage_dirs(
    dirs: list[Path],
    *,
    device: str | None = None,
    cap: float | None = None,
    impl: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Triage every finding of the finished campaigns in `dirs` that has no triage yet (minimal repro files
    go next to the raw ones), then group all of them. Returns (reports, root_causes), each report with its
    file in "_path"; writes nothing. `impl` re-runs the findings; without it only our own code is run (a
    report that names an external implementation is refused: a file never chooses code to run)."""
    from moe_lora_fuzz.fuzz.records.outdir import MergeError, report_paths
    from moe_lora_fuzz.fuzz.records.repro import ReproError, load

    reports, where = [], []
    for d in dirs:
        try:
            paths = report_paths(Path(d))
        except MergeError as e:
            raise TriageError(str(e)) from None
        for path in paths:
            from moe_lora_fuzz.fuzz.records.outdir import ReportError, read_report

            try:  # checked field by field (fuzz.records.outdir): a damaged report is one error line
                reports.append(dict(read_report(path), _path=str(path)))
            except ReportError as e:
                raise TriageError(str(e)) from None
            if not isinstance(reports[-1].get("impl"), str) or reports[-1].get("device", "cpu") not in ("cpu", "cuda"):
                raise TriageError(f"{path}: field 'impl' or 'device' missing or not one campaign's")
            where.append(d)
    for d, report in zip(where, reports, strict=True):
        todo = [f for f in report["findings"] if not _settled(f)]
        if not todo:
            continue
        dev = device or report.get("device", "cpu")
        from moe_lora_fuzz.fuzz.execution.worker import Worker
        from moe_lora_fuzz.fuzz.records.repro import is_builtin

        run_impl = impl or report["impl"]
        if impl is None and not is_builtin(run_impl):
            raise TriageError(
                f"{report['_path']}: names the external implementation {report['impl']!r}, and a file "
                f"never chooses code to run; pass --impl {report['impl']} if you trust it"
            )
        triager = Triager(run_impl, dev, Path(d), report.get("environment", {}))
        # causes already found in this report are known causes for the rest
        triager.causes = [f["triage"] for f in report["findings"] if _settled(f) and _opened_a_cause(f["triage"])]
        # every minimal form they were reached through (a cause joined from several forms attaches by their core)
        triager.reps = [
            f["triage"] for f in report["findings"] if _settled(f) and f["triage"]["via"].startswith("minimised")
        ]
        judge = WorkerJudge(Worker(dev, run_impl), dev, run_impl)
        try:
            for f in todo:
                try:
                    repro = load(_repro_path(f["repro"], Path(d)))
                except ReproError as e:
                    raise TriageError(str(e)) from None
                judge.metamorphic = f["kind"] == "metamorphic"  # the twins are what found it
                vd = judge(repro.case)  # judged again: the file may be edited, the implementation changed
                if not family(vd["kind"]):  # fixed, or intermittent (fuzz.triage.intermittent)
                    target = {"kind": f["kind"], "failure": repro.verdict.failure}
                    settle(triager, f, repro.case, target, judge, cap or TRIAGE_CAP_S[dev], fails=0, runs=1)
                    continue
                triager.triage(f, repro.case, vd, judge, cap or TRIAGE_CAP_S[dev])
                if progress:
                    progress(f"{f['repro']}: {(f.get('triage') or {}).get('trigger', 'not reproduced')}")
        finally:
            judge.worker.close()
    return reports, group_reports(reports)


def seed_triage(triage, report) -> None:
    """Keep triage already done when resuming: findings the previous session explained are known causes."""
    settled = [f for f in report.findings.values() if f.get("triage") and _settled(f)]
    if not settled:
        return
    triage.triager = Triager(report.cfg.impl, report.cfg.device, report.cfg.out, report.env)
    triage.triager.causes = [f["triage"] for f in settled if _opened_a_cause(f["triage"])]
    triage.triager.reps = [f["triage"] for f in settled if f["triage"]["via"].startswith("minimised")]
