"""Variant-aware drawing: most cases inside kernel variants already compiled, a stated share in new ones, and
the new ones compiled ahead in helper processes (docs/variants.md).

Every judged run's variant (the specialisation keys its Triton launches produced: fuzz.runtime.variants) is
observed by the worker and learned by a fuzz.space.variant_model.VariantModel. After the prelude, the first
STREAM_FIRST cases are the campaign's own stream while the model learns; case i is then chosen as follows. With
probability NEW_VARIANT_SHARE (from the case's seed) it explores: where there are compile-ahead helpers (a GPU),
it takes the oldest case the helpers have already run among those predicted to open a new variant
(`explore_ahead` keeps EXPLORE_PER_HELPER such cases per helper queued, each of its own projection), so the worker
loads their binaries from Triton's disk cache instead of compiling them; when none is ready yet it exploits
instead. Without helpers it takes the first of CANDIDATES draws (case_for(i), then draws from seeds
derived from case i's) predicted to open a new variant. Otherwise it exploits: when the predictor has lately been
right (VariantModel.trusted), the first candidate it calls known (fresh shapes); else a clone (an observed case
with its free knobs redrawn: VariantModel.clone); else a case the helpers have run; else the first candidate
predicted to stay in a compiled variant; else case_for(i) as drawn. The prelude (the first cases, which reach
every required edge) is never changed, and steering off known triggers (fuzz.campaign.steer) applies to the chosen
case as to a drawn one. Under the CPU interpreter nothing compiles, there are no helpers and drawing is off
unless asked for (`--variant-draw on`); variants are still observed and reported.

Triage uses the same model (`order`): the minimiser tries first the candidates predicted to keep the
case's observed variant, then those in another compiled variant, then the ones that would compile; and only
candidates predicted to compile are handed to the helpers (`ahead`).

The choice depends on what was observed, so (as with steering) a campaign with variant drawing on does not
draw the same cases on a resume or across shards; with it off (`--variant-draw off`, the CPU default) the case
stream is exactly case_for's.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from moe_lora_fuzz.fuzz.execution.worker import PRELUDE_CASES, _case_seed, case_for, runs_twin
from moe_lora_fuzz.fuzz.space.generate import draw
from moe_lora_fuzz.fuzz.space.variant_model import VariantModel, features

NEW_VARIANT_SHARE = 0.2  # of the drawn cases, this share is taken in a variant predicted new (exploring)
CANDIDATES = 6  # draws per case to choose among
FIRST_MINUTE_S = 60.0  # report.json's variants split the campaign here (a fresh machine compiles most early)
TIMELINE_EVERY_S = 10.0
AHEAD_CAP = 24  # triage candidates handed to the helpers per minimiser pass
EXPLORE_PER_HELPER = 2  # explored cases queued, compiling or compiled and waiting, per helper
EXPLORE_TRIES = 12  # draws per campaign case looking for cases to explore
CLONE_TRIES = 4  # attempts at a clone before a fresh draw predicted known (which may be wrong) where there are helpers
STREAM_FIRST = 48  # cases after the prelude taken as drawn, before any clone: the model has seen too few runs
# (clones of the first few cases' variants crowded out the stream's: two seeded bugs went unfound in 60 cases)
SALT = 0x7A41A
MODES = ("auto", "on", "off")
CHOICES = (
    "stream_first",
    "explore",
    "explore_waiting",
    "cloned",
    "warmed_instead_of_clone",
    "exploit",
    "no_candidate_new",
    "no_candidate_known",
)


def enabled(mode: str, device: str, ours: bool = False) -> bool:
    """--variant-draw: auto is on where kernels compile (cuda), off under the interpreter, and off for our own
    kernels, whose compile classes (fuzz.space.generate.Classes) already keep a campaign's variants few."""
    return mode == "on" or (mode == "auto" and device == "cuda" and not ours)


class VariantDraw:
    def __init__(self, cfg, profile=None, on: bool = False, started: float | None = None, model=None):
        self.cfg, self.profile, self.on = cfg, profile, on
        share = getattr(cfg, "new_variant_share", None)
        self.share = NEW_VARIANT_SHARE if share is None else share  # --new-variant-share
        self.model = model or VariantModel()
        self.started = time.time() if started is None else started
        self.pool = None  # the helpers (Precompiler), when explored cases are compiled before they are taken
        self.exploring: dict = {}  # explored case sent to the pool -> its projection (fuzz.space.variant_model)
        self.explore_next = 0  # the next draw to look at for cases to explore
        self.seen: dict = {}  # case -> (its variant, its run flags), the latest runs (triage orders by it)
        self.last = None  # the latest run's (new keys, compiled, loaded)
        self.counts: Counter = Counter()
        self.timeline: list = []
        self.sent_to_explore = 0  # cases handed to the helpers to explore
        self.clones: dict = {}  # planned clone -> the knob it has on probation (None: only free knobs redrawn)

    # ---- the draw ------------------------------------------------------------------------------------
    def case(self, index: int):
        """Case `index` of the campaign (before steering and --probe-contract)."""
        self.last = None  # what ran since (triage's runs) is not this case's
        return self._choose(index)

    def predict(self, case, **flags):
        """The variant the model expects of `case` (None: maybe a new one); the twin runs as the campaign runs
        it unless `flags` say otherwise (triage's runs)."""
        flags.setdefault("twin", runs_twin(self.cfg, case))
        return self.model.predict(features(case, **flags))

    def _choose(self, index: int):
        cfg = self.cfg
        raw = case_for(cfg, index, self.profile)
        if not self.on or (cfg.prelude and index < PRELUDE_CASES):
            return raw
        if self.counts["stream_first"] < STREAM_FIRST:  # the campaign's own stream while the model learns
            self.counts["stream_first"] += 1
            return raw
        rng = random.Random(_case_seed(cfg, index) ^ SALT)
        explore = rng.random() < self.share
        if explore and self.pool is not None:  # exploring: a case the helpers have compiled (explore_ahead)
            warmed = self._take_warmed()
            if warmed is not None:
                return warmed
            self.counts["explore_waiting"] += 1  # none compiled yet: this one exploits
        elif explore:  # exploring: the first candidate predicted to open a new variant
            for cand in self._candidates(raw, index):
                if self.predict(cand) is None:
                    self.counts["explore"] += 1
                    return cand
            self.counts["no_candidate_new"] += 1
            return raw
        if self.model.trusted():  # fresh draws the predictor calls known first: more shapes than clones
            for cand in self._candidates(raw, index):
                if self.predict(cand) is not None:
                    self.counts["exploit"] += 1
                    return cand
        cloned = None
        for _ in range(1 if self.pool is None else CLONE_TRIES):  # with helpers, what remains may well compile
            cloned = cloned or self.model.clone(
                raw, rng, getattr(self.profile, "fit", None), lambda c: runs_twin(cfg, c)
            )
        if cloned is not None:  # an observed case, its free knobs redrawn
            self.counts["cloned"] += 1
            if len(self.clones) > 4096:  # clones steering moved never come back
                self.clones.clear()
            self.clones[cloned[0]] = cloned[1]
            return cloned[0]
        warmed = self._take_warmed("warmed_instead_of_clone")  # no clone fitted (or nothing observed yet)
        if warmed is not None:
            return warmed
        for cand in self._candidates(raw, index):
            if self.predict(cand) is not None:
                self.counts["exploit"] += 1
                return cand
        self.counts["no_candidate_known"] += 1
        return raw

    def _take_warmed(self, why: str = "explore"):
        """The oldest explored case the helpers have run (its variants are in Triton's disk cache), or None."""
        if self.pool is None or not self.pool.warmed:
            return None
        case = self.pool.warmed.popleft()
        self.exploring.pop(case, None)
        self.counts[why] += 1
        return case

    def explore_ahead(self) -> None:
        """Keep EXPLORE_PER_HELPER cases per helper predicted to open a new variant queued in, compiling in or
        compiled by the helpers, each of a projection not already queued (two of one would compile one variant).
        Called while the worker judges a case (Worker.on_sent): its draws cost the campaign nothing."""
        if not self.on or self.pool is None:
            return
        want = EXPLORE_PER_HELPER * len(self.pool.helpers) - self.pool.exploring_count()
        if want <= 0:
            return
        queued, picked = set(self.exploring.values()), []
        for _ in range(EXPLORE_TRIES):
            j, self.explore_next = self.explore_next, self.explore_next + 1
            seed = (self.cfg.seed * 0xD1B54A32D192ED03 + j * 0x9E3779B97F4A7C15 + SALT) % (2**63)
            c = self._drawn(seed, j)
            feats = features(c, twin=runs_twin(self.cfg, c))
            projection = self.model.projection(feats)
            if self.model.predict(feats) is not None or projection in queued:
                continue
            self.exploring[c] = projection
            queued.add(projection)
            picked.append(c)
            if len(picked) >= want:
                break
        if picked:
            self.sent_to_explore += len(picked)
            self.pool.explore(picked)

    def _candidates(self, raw, index: int):
        yield raw
        base = _case_seed(self.cfg, index)
        for j in range(1, CANDIDATES):
            yield self._drawn((base * 0x9E3779B97F4A7C15 + j * 0xBF58476D1CE4E5B9 + SALT) % (2**63), index)

    def _drawn(self, seed: int, index: int):
        """A fresh draw from `seed`, fitted to the implementation."""
        c = draw(self.cfg.sizes, seed, index, interpreter=self.cfg.device == "cpu")
        return self.profile.fit(c) if self.profile is not None else c

    # ---- observing -----------------------------------------------------------------------------------
    def observe(self, case, flags: dict, seen: dict) -> None:
        """The worker's report of one run (Worker.on_variants): its keys and Triton's compile events."""
        keys = seen.get("keys", [])
        run = {
            "twin": bool(flags.get("metamorphic")),
            "quick": bool(flags.get("quick")),
            "probe": bool(flags.get("probe")),
        }
        new = self.model.observe(case, features(case, **run), keys)
        if case in self.clones and keys:
            self.model.free.outcome(self.clones.pop(case), new > 0)
        if keys:
            if len(self.seen) > 4096:
                self.seen.clear()
            self.seen[case] = (frozenset(keys), run)
        self.last = (new, seen.get("compiled", 0), seen.get("loaded", 0))
        self.counts["runs"] += 1
        self.counts["run_new_keys"] += new
        self.counts["run_compiled"] += seen.get("compiled", 0)
        self.counts["run_loaded"] += seen.get("loaded", 0)

    def after_case(self) -> None:
        """The campaign's own case was judged: its run's numbers go to the campaign's series."""
        new, compiled, loaded = self.last if self.last is not None else (0, 0, 0)
        self.last = None
        t = time.time() - self.started
        part = "first_minute" if t < FIRST_MINUTE_S else "after_first_minute"
        c = self.counts
        c[f"{part}.cases"] += 1
        c[f"{part}.new_keys"] += new
        c[f"{part}.cases_opening"] += new > 0
        c[f"{part}.compiled"] += compiled
        c[f"{part}.loaded"] += loaded
        if t >= FIRST_MINUTE_S and not c["distinct_at_first_minute"]:
            c["distinct_at_first_minute"] = len(self.model.keys) - new
            c["first_minute_end"] = t
        if not self.timeline or t - self.timeline[-1][0] >= TIMELINE_EVERY_S:
            self.timeline.append(
                [round(t, 1), c["first_minute.cases"] + c["after_first_minute.cases"], len(self.model.keys)]
            )

    # ---- triage ------------------------------------------------------------------------------------
    def order(self, current, cands: list) -> list:
        """The minimiser's candidates, those predicted to launch nothing `current`'s observed run did not launch
        first, then those predicted to stay in compiled variants, then the ones that may compile (stable within
        each). Predicted as a campaign runs a case without twins: triage's quick runs launch a part of that."""
        full = {"twin": False, "quick": False, "probe": False}
        variant = self.seen.get(current, (None,))[0]
        if variant is None:
            variant = self.predict(current, **full) or frozenset()

        def rank(c) -> int:
            p = self.predict(c, **full)
            return 2 if p is None else (0 if p <= variant else 1)

        return sorted(cands, key=rank)

    def ahead_filter(self, hook):
        """Wrap the helpers' `ahead` (triage's next candidates): only those predicted to compile go."""

        def ahead(cases: list) -> None:
            hook([c for c in cases if self.predict(c, twin=False, quick=False, probe=False) is None][:AHEAD_CAP])

        return ahead

    # ---- report.json ---------------------------------------------------------------------------------
    def summary(self, interpreter: bool) -> dict:
        c = self.counts
        parts = {}
        for part in ("first_minute", "after_first_minute"):
            n = c[f"{part}.cases"]
            parts[part] = {
                "cases": n,
                "new_keys": c[f"{part}.new_keys"],
                "new_keys_per_case": round(c[f"{part}.new_keys"] / max(n, 1), 4),
                "cases_opening_new_variants": c[f"{part}.cases_opening"],
                "compiled": c[f"{part}.compiled"],
                "compiled_per_case": round(c[f"{part}.compiled"] / max(n, 1), 4),
                "loaded_from_disk_cache": c[f"{part}.loaded"],
            }
        later = parts["after_first_minute"]
        span = (time.time() - self.started) - c["first_minute_end"] if c["first_minute_end"] else 0.0
        per_hour = round(later["new_keys"] / span * 3600) if span > 10 else None
        kernels = Counter(k.split("#")[0] for k in self.model.keys)
        return {
            "counted": "one variant = one Triton specialisation key (kernel, constexprs, launch options, pointer "
            "dtypes, integers ==1 / multiple of 16 / width, 16-byte pointer alignment: fuzz.runtime.variants); a "
            "key is new the first time a run of this campaign launches it; compiled/loaded are Triton's own "
            "events in the worker (GPU: compiled = the compiler ran, loaded = found in the disk cache)"
            + (
                "; under the interpreter nothing compiles: new keys are what a GPU would compile" if interpreter else ""
            ),
            "draw": "on" if self.on else "off",
            "new_variant_share": self.share if self.on else None,
            "distinct": len(self.model.keys),
            "kernels": dict(kernels),
            **parts,
            "distinct_per_hour_after_first_minute": per_hour,
            "all_runs": {
                "runs": c["runs"],
                "new_keys": c["run_new_keys"],
                "compiled": c["run_compiled"],
                "loaded_from_disk_cache": c["run_loaded"],
            },
            "choices": {k: c[k] for k in CHOICES},
            "knobs": self.model.free.summary(),
            "predictor": {
                "deciding_features": self.model.deciding(),
                "observations": len(self.model.pairs),
                "right": self.model.right,
                "wrong": self.model.wrong,
                "recent_accuracy": round(sum(self.model.recent) / max(len(self.model.recent), 1), 3),
                "trusted": self.model.trusted(),
            },
            "warmed_ahead": self.sent_to_explore,
            "timeline": self.timeline,
        }


def attach(cfg, worker, pre, started: float) -> VariantDraw:
    """The campaign's variant draw, wired to its worker (observations, triage's order) and helpers."""
    ours = bool(getattr(worker.profile, "ours", False))
    vd = VariantDraw(cfg, worker.profile, enabled(getattr(cfg, "variant_draw", "auto"), cfg.device, ours), started)
    worker.on_variants = vd.observe
    if cfg.device != "cpu":
        worker.variant_order = vd.order
    if pre is not None:
        if vd.on:  # the helpers compile the cases explored, not class streams
            vd.pool, pre.scan, worker.on_sent = pre, False, vd.explore_ahead
        if getattr(worker, "ahead", None) is not None:
            worker.ahead = vd.ahead_filter(worker.ahead)
    return vd
