"""One finding, explained: its root key, the single-knob flips of its case, `triage_case` (attach to a known
cause, else minimise and read the essential knobs off the result, then the differential flips), and whether a
known cause explains a case. The budget shares of triage and the knob groups of a root key are here too.
The campaign's and the offline triage (fuzz.triage.triager, fuzz.triage.offline) build on it; the whole
procedure is told in fuzz/triage/triager.py's docstring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.space.case import LAYOUTS, Case
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
        order=None if interpreter else getattr(judge, "order", None),  # the variants observed (docs/variants.md)
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
