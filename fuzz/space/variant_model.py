"""Which kernel variants a case will compile, learned from the variants earlier cases did compile.

A case's variant is the set of specialisation keys its launches produced (fuzz.runtime.variants); nothing here
knows which kernel runs. What a wrapper compiles follows from a few properties of the case (its dtype, flags,
launch configuration, the size buckets a wrapper picks its tiles from, the divisibility of sizes that reach
strides), so each case is described by generic features derived from the Case's knob metadata:

    int knobs     `name~log2` (bit length), `name==1`, `name%16` (a multiple of 16), `name==` (the value);
                  the same for `pairs` (m * top_k, the routed pairs)
    option/flag   the value itself
    config        every launch-configuration knob (block_m, shrink.block_n, ...) as it is
    disabled      whether any slot is disabled
    run flags     twin (the metamorphic twins run), quick (triage's runs), probe (--probe-contract)

`VariantModel` keeps the distinct (features, variant) observations and the features that decide the variant:
those that never varied (no evidence they decide nothing), then, greedily, the feature that most reduces the
observations whose projection onto the kept features does not single out their variant (refit ever more
rarely, and sooner after a wrong prediction). A case is predicted to be in a known variant when its projection
was observed and each of its kept features' values was seen before (a never-seen value, e.g. the first M of a
new size bucket, may select a new specialisation).
`clone` makes a case in a known variant: an observed case with its free knobs redrawn. A knob is free once
clones that redrew it (on probation, one knob at a time, PROBATION_SHARE of the clones) opened no new key
FREE_AFTER times and never did (`FreeKnobs`); the data seed is free from the start. So what a kernel
specialises on stays as observed, and what it does not (the data, and whichever knobs earned it) is drawn
afresh.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque

import numpy as np
from moe_lora_fuzz.contract import knobs_of
from moe_lora_fuzz.fuzz.space.case import Case, repair

REFIT_EVERY = 32  # observations between refits at least (a quarter of that after a wrong prediction)
RECENT = 200  # predictions the predictor's recent accuracy is judged on
TRUSTED = 0.95  # a predictor this accurate on at least RECENT / 4 of them may choose fresh draws (`trusted`)
FIT_TIME_SHARE = 0.02  # refits wait while they took more than this share of the model's lifetime
MAX_OBSERVATIONS = 20_000  # distinct (features, variant) pairs kept; beyond it only the table grows
RUN_FLAGS = ("twin", "quick", "probe")

_INT_KNOBS = tuple(n for n, k in knobs_of(Case).items() if k.kind in ("int", "pow2") and not k.opaque)
_VALUE_KNOBS = tuple(n for n, k in knobs_of(Case).items() if k.kind in ("options", "flag"))


def features(case: Case, twin: bool = False, quick: bool = False, probe: bool = False) -> dict:
    """The case's features (see the module docstring), by name."""
    out: dict = {}
    ints = {name: getattr(case, name) for name in _INT_KNOBS}
    ints["pairs"] = case.m * case.top_k  # routed (token, expert) pairs: the length of a wrapper's sorted ids
    for name, v in ints.items():
        out[f"{name}~log2"], out[f"{name}==1"], out[f"{name}%16"] = v.bit_length(), v == 1, v % 16 == 0
        out[f"{name}=="] = v  # the value itself (a wrapper may pass a size as a constexpr)
    for name in _VALUE_KNOBS:
        out[name] = getattr(case, name)
    for name, v in case.config.flat().items():
        out[f"config.{name}"] = v
    out["disabled"] = bool(case.disabled)
    out.update(twin=bool(twin), quick=bool(quick), probe=bool(probe))
    return out


def knob_of(feature: str) -> str | None:
    """The Case knob a feature is read from (None for the run flags); config knobs by their flat name."""
    if feature in RUN_FLAGS:
        return None
    if feature.startswith("pairs"):
        return "m"  # (and top_k)
    if feature.startswith("config."):
        return feature[len("config.") :]
    return feature.split("~")[0].split("==")[0].split("%")[0]


class VariantModel:
    def __init__(self):
        self.names: tuple = ()  # feature names, in a fixed order
        self.pairs: dict = {}  # (feature values, variant) -> an observed case with them
        self.values: dict = {}  # feature name -> values seen
        self.keys: set = set()  # every key seen
        self.kept: tuple = ()  # indices of the deciding features
        self.table: dict = {}  # projection on `kept` -> variant
        self.since_fit = 0
        self.wrong = self.right = 0
        self.free = FreeKnobs()
        self.recent: deque = deque(maxlen=RECENT)  # whether the latest runs predicted known opened no new key
        self.protos: list = []  # (twins ran, case) of the campaign's runs, one per distinct observation
        self.created, self.fit_seconds = time.monotonic(), 0.0

    # ---- learning -------------------------------------------------------------------------------------
    def observe(self, case: Case, feats: dict, keys) -> int:
        """One judged run: its features and the keys it launched. Returns how many keys were new."""
        variant = frozenset(keys)
        new = len(variant - self.keys)
        if variant and self.predict(feats) is not None:  # called known: was it (no new key)?
            self.recent.append(new == 0)
        self.keys |= variant
        if not variant:
            return new  # a run that launched nothing (refused, or raised before a launch) says nothing
        if not self.names:
            self.names, self.kept = tuple(feats), tuple(range(len(feats)))
        row = tuple(feats[n] for n in self.names)
        for n, v in zip(self.names, row, strict=True):
            self.values.setdefault(n, set()).add(v)
        predicted = self.table.get(self._project(row))
        if predicted is not None:
            self.right += predicted == variant
            self.wrong += predicted != variant
        if (row, variant) not in self.pairs and len(self.pairs) < MAX_OBSERVATIONS:
            self.pairs[(row, variant)] = case
            if not feats.get("quick") and not feats.get("probe"):  # a campaign's run: a prototype for clones
                self.protos.append((bool(feats.get("twin")), case))
        self.table.setdefault(self._project(row), variant)
        self.since_fit += 1
        due = max(REFIT_EVERY, len(self.pairs) // 8)  # a refit costs O(features x observations): ever rarer
        wrong = predicted not in (None, variant)
        cheap = self.fit_seconds <= FIT_TIME_SHARE * (time.monotonic() - self.created)
        if cheap and (self.since_fit >= due or (wrong and self.since_fit >= due // 4)):
            t0 = time.monotonic()
            self.fit()
            self.fit_seconds += time.monotonic() - t0
        return new

    def fit(self) -> None:
        """Choose the deciding features again from every observation: forward selection, starting from the
        features that never varied, adding the feature that most reduces the observations a majority vote per
        projection gets wrong (coarsest first on ties), until none is wrong or no feature helps."""
        self.since_fit = 0
        rows = list(self.pairs)
        if not rows:
            return
        codes = [{} for _ in self.names]
        x = np.array([[codes[j].setdefault(v, len(codes[j])) for j, v in enumerate(row)] for row, _ in rows], np.int64)
        variants: dict = {}
        y = np.array([variants.setdefault(variant, len(variants)) for _, variant in rows], np.int64)
        order = sorted(range(len(self.names)), key=lambda j: len(self.values.get(self.names[j], ())))
        kept = [j for j in order if len(self.values.get(self.names[j], ())) < 2]
        h = _mix(np.zeros(len(rows), np.int64), x[:, kept])
        wrong = _wrong(h, y)
        while wrong:
            best = min(
                ((_wrong(_mix(h, x[:, [j]]), y), n, j) for n, j in enumerate(order) if j not in kept), default=None
            )
            if best is None or best[0] >= wrong:
                break
            wrong, j = best[0], best[2]
            kept.append(j)
            h = _mix(h, x[:, [j]])
        self.kept = tuple(sorted(kept))
        self.table = {}
        for row, variant in rows:
            self.table.setdefault(self._project(row), variant)

    def _project(self, row: tuple) -> tuple:
        return tuple(row[j] for j in self.kept)

    # ---- predicting -----------------------------------------------------------------------------------
    def predict(self, feats: dict) -> frozenset | None:
        """The variant a run with these features will launch, None when it may be a new one."""
        if not self.names:
            return None
        row = tuple(feats.get(n) for n in self.names)
        if any(row[j] not in self.values.get(self.names[j], ()) for j in self.kept):
            return None  # a value never seen of a deciding feature (or of one that never varied)
        return self.table.get(self._project(row))

    def projection(self, feats: dict) -> tuple:
        """The features' values that decide the variant (two runs with the same projection are predicted alike)."""
        return self._project(tuple(feats.get(n) for n in self.names)) if self.names else ()

    def trusted(self) -> bool:
        """Whether the cases the predictor called known lately stayed in known variants often enough that fresh
        draws it calls known may be taken (more shapes than clones give)."""
        return len(self.recent) >= RECENT // 4 and sum(self.recent) >= TRUSTED * len(self.recent)

    def deciding(self) -> list[str]:
        """The features that decide the variant, as far as the observations show (those that never varied, kept
        for want of evidence, left out)."""
        return [self.names[j] for j in self.kept if len(self.values.get(self.names[j], ())) > 1]

    def clone(self, raw: Case, rng: random.Random, fit=None, twin=None) -> tuple[Case, str | None] | None:
        """A case in a known variant: an observed case with its free knobs (and, on probation, one more)
        redrawn from `raw`, fitted (`fit`: the implementation's ImplProfile.fit) and valid, every other knob
        as observed, and (`twin`: case -> whether its twins will run) twins run as they did on it: the data
        seed moves on until they do. (case, the knob on probation or None); None when nothing fits."""
        if not self.protos:
            return None
        probe = self.free.probation(rng)
        for _ in range(3):
            twinned, proto = rng.choice(self.protos)
            trial = probe if probe and dict((k, v != w) for k, v, w in _knobs(raw, proto)).get(probe) else None
            redraw = self.free.free | ({trial} if trial else set())  # a probe only where the value differs
            c = copy_knobs(proto, raw, redraw, fit)
            if c is None or not all(v == w for k, v, w in _knobs(c, proto) if k not in redraw):
                continue
            for step in range(16 if twin is not None else 1):
                moved = c.replace(seed=(c.seed + step) % (2**63)) if step else c
                if twin is None or twin(moved) == twinned:
                    if step and fit is not None and fit(moved) != moved:
                        break  # the seed also moved what the implementation's fit decides
                    return moved, trial
        return None


# ---- free knobs: what a case may redraw and stay in its variant ------------------------------------------
PROBATION_SHARE = 0.1  # of the clones, this share also redraws one knob not yet known to be free
FREE_AFTER = 4  # a knob is free once this many clones that redrew it opened no new key, and none did
GIVE_UP_AFTER = 2  # a knob whose redraw opened new keys this often is not tried again


class FreeKnobs:
    """Knobs learned to leave the variant alone (a clone that redraws them opens no new key). The data seed
    (the opaque knob) is free from the start; every other knob earns it on probation."""

    def __init__(self):
        self.opaque = {n for n, k in knobs_of(Case).items() if k.opaque}
        self.free = set(self.opaque)
        self.names = [n for n in Case.__dataclass_fields__ if n != "config"] + list(Case().config.flat())
        self.ok: Counter = Counter()
        self.bad: Counter = Counter()

    def probation(self, rng: random.Random) -> str | None:
        candidates = [n for n in self.names if n not in self.free and self.bad[n] < GIVE_UP_AFTER]
        return rng.choice(candidates) if candidates and rng.random() < PROBATION_SHARE else None

    def outcome(self, probe: str | None, opened_new: bool) -> None:
        """A clone ran: with `probe` redrawn (or only the free knobs), it opened new keys or not."""
        if probe is not None:
            (self.bad if opened_new else self.ok)[probe] += 1
            if self.ok[probe] >= FREE_AFTER and not self.bad[probe]:
                self.free.add(probe)
            return
        for name in self.free - self.opaque:  # a free knob that was not: blamed together, freed again later
            (self.bad if opened_new else self.ok)[name] += 1
            if self.bad[name] * 10 > self.ok[name]:
                self.free.discard(name)

    def summary(self) -> dict:
        return {"free": sorted(self.free), "bound": sorted(n for n in self.names if self.bad[n] >= GIVE_UP_AFTER)}


def _knobs(a: Case, b: Case):
    """(name, a's value, b's value) for every Case field but the config, and every flat config knob."""
    for n in Case.__dataclass_fields__:
        if n != "config":
            yield n, getattr(a, n), getattr(b, n)
    fa, fb = a.config.flat(), b.config.flat()
    for n in fa:
        yield n, fa[n], fb[n]


def copy_knobs(case: Case, proto: Case, knobs: set, fit=None) -> Case | None:
    """`case` with the named knobs (Case fields or flat config names) taken from `proto`, cross-field rules
    repaired, fitted (`fit`: the implementation's ImplProfile.fit) and validated; None when that is not a
    valid case."""
    fields = {n: getattr(proto, n) for n in knobs if n in Case.__dataclass_fields__ and n != "config"}
    config = case.config
    for name, value in proto.config.flat().items():
        if name in knobs:
            config = config.with_knob(name, value)
    try:
        moved = repair(case.replace(**fields, config=config))
        return (fit(moved) if fit else moved).validate()
    except ValueError:
        return None


def _mix(h: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Row hashes extended by more feature codes (wrapping int64 arithmetic: a hash, not a number)."""
    with np.errstate(over="ignore"):
        for j in range(cols.shape[1]):
            h = h * np.int64(1_000_003) + cols[:, j] + 1
    return h


def _wrong(h: np.ndarray, y: np.ndarray) -> int:
    """How many rows the other rows of their projection (hash `h`) fail to predict (leave one out: a row alone
    in its projection counts as wrong, so splitting the observations finer is no gain in itself)."""
    order = np.lexsort((y, h))
    hs, ys = h[order], y[order]
    starts = np.flatnonzero(np.r_[True, (hs[1:] != hs[:-1]) | (ys[1:] != ys[:-1])])  # one run per (projection, variant)
    counts, ph = np.diff(np.r_[starts, len(h)]), hs[starts]
    order = np.lexsort((counts, ph))  # by projection, then count: each projection's largest last
    g, c = ph[order], counts[order]
    last = np.r_[g[1:] != g[:-1], True]
    first = np.r_[True, g[1:] != g[:-1]]
    top = np.maximum.reduceat(c, np.flatnonzero(first))[np.cumsum(first) - 1]  # the projection's largest count
    second = np.where(first, 0, np.r_[0, c[:-1]])  # the next smaller count within it (0 if none)
    right = (c >= 2) & (c - 1 >= np.where(last, second, top))
    return int(len(h) - c[right].sum())
