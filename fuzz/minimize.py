"""Delta debugging over the knobs of a Case: keep a reduction while the failure keeps its signature.

Candidates per pass, biggest cuts first: every size toward its smallest valid value (then halved, then
minus one), flags toward off, dtype/layout/routing toward the first (simplest) option, the config toward
the default and each tile field toward its simplest value (then halfway, then one step), disabled slots
dropped one by one, and the data
seed toward 0. Passes repeat until none of the candidates still fails: the result is 1-minimal over
this candidate set (unless the budget ran out first, which the result says).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from kernels.config import MoeLoraConfig, TileConfig

from .case import DTYPES, LAYOUTS, ROUTINGS, SLOTTINGS, Case

SIZE_FLOORS = {"m": 1, "top_k": 1, "num_experts": 1, "num_slots": 1, "rank": 1, "real_rank": 1, "k_dim": 1,
               "n_dim": 1, "offset": 0, "extra_cols": 0, "align_slack": 0, "num_slices": 1}
TILE_SIMPLEST = dataclasses.asdict(TileConfig())  # "simplest" tile = the default one, field by field


@dataclass(frozen=True)
class MinimizeResult:
    case: Case
    steps: int  # accepted reductions
    tries: int  # cases run
    one_minimal: bool
    seconds: float


def _fix(c: Case) -> Case:
    """Repair cross-field rules after one knob moved (so a cut of rank also cuts real_rank)."""
    return c.replace(real_rank=min(c.real_rank, c.rank),
                     disabled=tuple(d for d in c.disabled if d < c.num_slots),
                     routing=c.routing if (c.routing != "distinct" or c.top_k <= c.num_experts) else "uniform")


def _size_steps(v: int, floor: int) -> list[int]:
    out = [floor, (v + floor) // 2, v - 1]
    return [x for i, x in enumerate(out) if floor <= x < v and x not in out[:i]]


def candidates(c: Case) -> Iterator[Case]:
    for name, floor in SIZE_FLOORS.items():
        for v in _size_steps(getattr(c, name), floor):
            yield _fix(c.replace(**{name: v}))
    for name in ("mul_routed_weight", "strided"):
        if getattr(c, name):
            yield c.replace(**{name: False})
    for name, options in (("dtype", DTYPES), ("layout", LAYOUTS), ("routing", ROUTINGS), ("slotting", SLOTTINGS)):
        current = options.index(getattr(c, name))
        for opt in options[:current]:
            yield _fix(c.replace(**{name: opt}))
    for i in range(len(c.disabled)):
        yield c.replace(disabled=c.disabled[:i] + c.disabled[i + 1:])
    default = MoeLoraConfig()
    if c.config != default:
        yield c.replace(config=default)
    cfg = c.config
    for name in ("block_m", "align"):
        if getattr(cfg, name) != getattr(default, name):
            yield c.replace(config=dataclasses.replace(cfg, **{name: getattr(default, name)}))
    for stage in ("shrink", "expand"):
        tile: TileConfig = getattr(cfg, stage)
        for fieldname, simplest in TILE_SIMPLEST.items():
            v = getattr(tile, fieldname)
            # toward the simplest value, then halfway and one step (split_k 3 -> 2); invalid ones are skipped
            steps = [simplest] + (_size_steps(v, simplest)[1:] if v > simplest else [])
            for target in dict.fromkeys(steps):
                if target != v:
                    new_tile = dataclasses.replace(tile, **{fieldname: target})
                    yield c.replace(config=dataclasses.replace(cfg, **{stage: new_tile}))
    if c.seed != 0:
        yield c.replace(seed=0)


def minimize(case: Case, still_fails: Callable[[Case], bool], *, budget: float = 60.0, interpreter: bool = False,
             progress: Callable[[str], None] | None = None) -> MinimizeResult:
    start = time.monotonic()
    steps = tries = 0
    current = case
    seen = {case}  # every candidate is tried once: the walk cannot cycle
    while True:
        improved = False
        for cand in candidates(current):
            if time.monotonic() - start > budget:
                return MinimizeResult(current, steps, tries, False, time.monotonic() - start)
            if cand in seen:
                continue
            seen.add(cand)
            try:
                cand.validate(interpreter)
            except ValueError:
                continue
            tries += 1
            if still_fails(cand):
                current, steps, improved = cand, steps + 1, True
                if progress:
                    progress(f"[{time.monotonic() - start:5.1f}s] step {steps} (try {tries}): {describe(current)}")
                break
        if not improved:
            return MinimizeResult(current, steps, tries, True, time.monotonic() - start)


def describe(c: Case) -> str:
    """The knobs that differ from the simplest case, one line."""
    base = Case()
    diffs = [f"{f.name}={getattr(c, f.name)!r}" for f in dataclasses.fields(Case)
             if f.name != "config" and getattr(c, f.name) != getattr(base, f.name)]
    cfg, dcfg = c.config, MoeLoraConfig()
    diffs += [f"{name}={getattr(cfg, name)!r}" for name in ("block_m", "align")
              if getattr(cfg, name) != getattr(dcfg, name)]
    for stage in ("shrink", "expand"):
        t, d = getattr(cfg, stage), getattr(dcfg, stage)
        diffs += [f"{stage}.{f.name}={getattr(t, f.name)}" for f in dataclasses.fields(TileConfig)
                  if getattr(t, f.name) != getattr(d, f.name)]
    return " ".join(diffs) or "(simplest case)"
