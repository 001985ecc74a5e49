"""Delta debugging over the knobs of a Case: keep a reduction while the case still fails the same way.

"The same way" (`same_failure`) follows the failure, not the case class: the same kind family (fuzz.judgement.oracle
FAMILIES: an oob-read may become a mismatch of the same bug) and, for exceptions and crashes, the same
failure detail (exception type + first frame inside the implementation, or how the process died). So the
minimiser may drop a knob of the old signature (dtype, layout, mul_routed_weight, split-K) when the
failure survives without it, and `dropped_class_knobs` says which ones it dropped.

Candidates per pass, biggest cuts first: halves, then quarters, ... of the knobs reset together, every
size toward its smallest valid value (then halved, then minus one), flags toward off, dtype/layout/routing
toward the first (simplest) option, the config toward the default and each tile field toward its simplest
value (then halfway, then one step), disabled slots dropped one by one or renumbered toward slot 0, and the
data seed toward 0.
Passes repeat until none of the
candidates still fails: the result is 1-minimal over this candidate set (unless the budget ran out first,
which the result says). Every tried candidate's outcome is kept (`MinimizeResult.outcomes`): triage reads
the essential knobs off the rejected ones.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from moe_lora_fuzz.contract import MoeLoraConfig, TileConfig, knobs_of
from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.space.case import Case, repair

# The knob lists, derived from the Case fields' Knob metadata (contract.knobs), so a new knob is minimised with
# no edit here. Every knob moves toward its default, which Case declares its simplest value (m: 1, since m = 0 is
# an edge, not a simplification).
_CASE_KNOBS = knobs_of(Case)
_DEFAULT_CASE = Case()
SIZE_FLOORS = {  # sizes: tried at the floor, halfway and one below
    name: getattr(_DEFAULT_CASE, name) for name, k in _CASE_KNOBS.items() if k.kind in ("int", "pow2") and not k.opaque
}
FLAG_KNOBS = tuple(name for name, k in _CASE_KNOBS.items() if k.kind == "flag")  # toward their default (off)
OPTION_KNOBS = {name: k.options for name, k in _CASE_KNOBS.items() if k.kind == "options"}  # simplest first
RESET_KNOBS = tuple(name for name, k in _CASE_KNOBS.items() if k.opaque)  # only reset (the data seed), last
TILE_SIMPLEST = dataclasses.asdict(TileConfig())  # "simplest" tile = the default one, field by field
CONFIG_KNOBS = tuple(knobs_of(MoeLoraConfig))  # block_m, align (the stages' tiles are walked field by field)
STAGES = MoeLoraConfig.STAGES


@dataclass(frozen=True)
class MinimizeResult:
    case: Case
    steps: int  # accepted reductions
    tries: int  # cases run
    one_minimal: bool
    seconds: float
    outcomes: dict = field(default_factory=dict, compare=False)  # case tried -> still failed (None: invalid)


# ---- knobs by name ----------------------------------------------------------------------------------
def knob_values(c: Case) -> dict:
    """Every knob of a case by a flat name: Case fields, block_m/align, shrink.<field>, expand.<field>."""
    out = {f.name: getattr(c, f.name) for f in dataclasses.fields(Case) if f.name != "config"}
    out.update(c.config.flat())
    return out


SIMPLEST = knob_values(Case())
CASE_KNOBS = {f.name for f in dataclasses.fields(Case)}


def with_knob(c: Case, name: str, value) -> Case:
    """The case with one knob changed, cross-field rules repaired (a cut of rank also cuts real_rank)."""
    if name in SIMPLEST and name not in CASE_KNOBS:  # a launch-configuration knob ("block_m", "expand.split_k")
        return c.replace(config=c.config.with_knob(name, value))
    return _fix(c.replace(**{name: value}))


def same_failure(target: dict, vd: dict) -> bool:
    """The minimiser's predicate: `vd` fails like `target` (verdict dicts). Same kind family and, where the
    family is exception or crash, the same failure detail; the case class is not part of it."""
    fam = family(vd["kind"])
    if not fam or fam != family(target["kind"]):
        return False
    return fam not in ("exception", "crash") or vd.get("failure", "") == target.get("failure", "")


CLASS_KNOBS = ("dtype", "layout", "mul_routed_weight", "shrink.split_k", "expand.split_k")


def dropped_class_knobs(start: Case, end: Case) -> list[str]:
    """Knobs of the old coarse-class signature that minimisation changed: the failure survived without them."""
    a, b = knob_values(start), knob_values(end)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in CLASS_KNOBS if a[k] != b[k]]


# ---- the reducer ------------------------------------------------------------------------------------
def _fix(c: Case) -> Case:
    """Repair cross-field rules after one knob moved (so a cut of rank also cuts real_rank)."""
    return repair(c)


def _size_steps(v: int, floor: int) -> list[int]:
    out = [floor, (v + floor) // 2, v - 1]
    return [x for i, x in enumerate(out) if floor <= x < v and x not in out[:i]]


def _chunk_resets(c: Case) -> Iterator[Case]:
    """Big cuts first (ddmin's idea over knobs): every knob of one half, then one quarter, ... of the knobs
    away from their simplest value reset at once. Most knobs do not matter to a failure, so a few tries
    remove most of them; single-knob reductions then finish the job."""
    away = [k for k, v in knob_values(c).items() if v != SIMPLEST[k]]
    n = 2
    while n <= len(away) // 2:
        size = -(-len(away) // n)
        for i in range(0, len(away), size):
            cut = c
            for name in away[i : i + size]:
                cut = with_knob(cut, name, SIMPLEST[name])
            yield cut
        n *= 2


# Knobs whose reduction keeps a compiled kernel's variant (fuzz.space.generate's compile classes: everything but the
# class knobs and the launch configuration; K, N, R and the offset only by multiples of 16, which keeps every
# stride's divisibility class). On a GPU each new variant costs a compilation (0.2-1 s, more for a foreign
# kernel), so GPU triage tries these first (`keep_variant_first`); the interpreter compiles nothing.
SAME_VARIANT_SIZES = ("m", "real_rank", "align_slack")
SAME_VARIANT_OPTIONS = ("routing", "slotting")
SHIFTED_SIZES = ("k_dim", "n_dim", "rank", "offset")


def same_variant_candidates(c: Case) -> Iterator[Case]:
    """Reductions that keep the compiled variant: M, routing, slotting, real rank, align slack, disabled slots,
    the data seed, and K/N/R/offset moved down by multiples of 16 (never onto 1 or off their residue)."""
    for name in SAME_VARIANT_SIZES:
        for v in _size_steps(getattr(c, name), SIZE_FLOORS[name]):
            yield _fix(c.replace(**{name: v}))
    for name in SAME_VARIANT_OPTIONS:
        options = OPTION_KNOBS[name]
        for opt in options[: options.index(getattr(c, name))]:
            yield _fix(c.replace(**{name: opt}))
    for i in range(len(c.disabled)):
        yield c.replace(disabled=c.disabled[:i] + c.disabled[i + 1 :])
    for name in SHIFTED_SIZES:
        v = getattr(c, name)
        lowest = v % 16 if (v % 16 > 1 or (name == "offset" and v % 16 == 0)) else v % 16 + 16
        for w in dict.fromkeys((lowest, lowest + (v - lowest) // 32 * 16, v - 16)):
            if SIZE_FLOORS[name] <= w < v and (w == 1) == (v == 1):
                yield _fix(c.replace(**{name: w}))
    if c.seed != SIMPLEST["seed"]:
        yield c.replace(seed=SIMPLEST["seed"])


def candidates(c: Case, keep_variant_first: bool = False) -> Iterator[Case]:
    if keep_variant_first:
        yield from same_variant_candidates(c)
    yield from _chunk_resets(c)
    for name, floor in SIZE_FLOORS.items():
        for v in _size_steps(getattr(c, name), floor):
            yield _fix(c.replace(**{name: v}))
    for name in FLAG_KNOBS:
        if getattr(c, name) != SIMPLEST[name]:
            yield c.replace(**{name: SIMPLEST[name]})
    for name, options in OPTION_KNOBS.items():
        current = options.index(getattr(c, name))
        for opt in options[:current]:
            yield _fix(c.replace(**{name: opt}))
    for i in range(len(c.disabled)):
        yield c.replace(disabled=c.disabled[:i] + c.disabled[i + 1 :])
    for i, d in enumerate(c.disabled):  # toward slot 0, so that num_slots can shrink under a disabled slot
        free = min(set(range(d)) - set(c.disabled), default=None)
        if free is not None:
            yield c.replace(disabled=c.disabled[:i] + (free,) + c.disabled[i + 1 :])
    default = MoeLoraConfig()
    if c.config != default:
        yield c.replace(config=default)
    cfg = c.config
    for name in CONFIG_KNOBS:
        if getattr(cfg, name) != getattr(default, name):
            yield c.replace(config=dataclasses.replace(cfg, **{name: getattr(default, name)}))
    for stage in STAGES:
        tile: TileConfig = getattr(cfg, stage)
        for fieldname, simplest in TILE_SIMPLEST.items():
            v = getattr(tile, fieldname)
            # toward the simplest value, then halfway and one step (split_k 3 -> 2); invalid ones are skipped
            steps = [simplest] + (_size_steps(v, simplest)[1:] if v > simplest else [])
            for target in dict.fromkeys(steps):
                if target != v:
                    new_tile = dataclasses.replace(tile, **{fieldname: target})
                    yield c.replace(config=dataclasses.replace(cfg, **{stage: new_tile}))
    for name in RESET_KNOBS:
        if getattr(c, name) != SIMPLEST[name]:
            yield c.replace(**{name: SIMPLEST[name]})


def minimize(
    case: Case,
    still_fails: Callable[[Case], bool],
    *,
    budget: float = 60.0,
    interpreter: bool = False,
    progress: Callable[[str], None] | None = None,
    known: Callable[[Case], bool] | None = None,
    ahead: Callable[[list], None] | None = None,
    keep_variant_first: bool = False,
    order: Callable[[Case, list], list] | None = None,
) -> MinimizeResult:
    """`known(case)`: stop as soon as the walk reaches a case already known to be minimal (triage: another
    finding's minimal case); the result is then reported 1-minimal, as that case was shown to be.
    `ahead(cases)`: told each pass's first untried candidates (a campaign's precompile helpers compile their
    kernel variants while the walk judges them one by one).
    `keep_variant_first`: every pass tries the reductions that keep the compiled variant first (GPU triage).
    `order(current, candidates)`: each pass's candidates reordered (fuzz.campaign.variant_draw.VariantDraw.order:
    those predicted to keep the observed variant first); the set tried, hence 1-minimality, is unchanged, and
    `ahead` is then told every untried candidate in that order (its receiver picks the ones to compile)."""
    start = time.monotonic()
    steps = tries = 0
    current = case
    outcomes: dict = {case: True}  # every candidate is tried once: the walk cannot cycle

    def result(one_minimal: bool) -> MinimizeResult:
        return MinimizeResult(current, steps, tries, one_minimal, time.monotonic() - start, outcomes)

    while True:
        improved = False
        walk = candidates(current, keep_variant_first)
        if order is not None:
            walk = order(current, list(dict.fromkeys(walk)))
        if ahead is not None:
            untried = [c for c in _valid(iter(walk), interpreter) if c not in outcomes]
            ahead(untried if order is not None else untried[:AHEAD])
            walk = walk if order is not None else candidates(current, keep_variant_first)
        for cand in walk:
            if time.monotonic() - start > budget:
                return result(False)
            if cand in outcomes:
                continue
            try:
                cand.validate(interpreter)
            except ValueError:
                outcomes[cand] = None  # invalid: neither fails nor passes
                continue
            tries += 1
            outcomes[cand] = still_fails(cand)
            if outcomes[cand]:
                current, steps, improved = cand, steps + 1, True
                if progress:
                    progress(f"[{time.monotonic() - start:5.1f}s] step {steps} (try {tries}): {describe(current)}")
                if known is not None and known(current):
                    return result(True)
                break
        if not improved:
            return result(True)


AHEAD = 24  # candidates handed to `ahead` per pass


def _valid(cases: Iterator[Case], interpreter: bool) -> Iterator[Case]:
    for c in cases:
        try:
            yield c.validate(interpreter)
        except ValueError:
            pass


def describe(c: Case) -> str:
    """The knobs that differ from the simplest case, one line."""
    values = knob_values(c)
    return " ".join(f"{k}={v!r}" for k, v in values.items() if v != SIMPLEST[k]) or "(simplest case)"
