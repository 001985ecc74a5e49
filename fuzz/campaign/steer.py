"""Known causes do not mask the next one: draws steer away from known triggers, and a failure beyond every
known trigger is a finding of its own.

Once triage explains a root cause (its essential knobs and the values that make it disappear, fuzz.triage.triager),
a drawn case that meets the cause's trigger (none of its essential knobs at a disappearing value:
`triage._applicable`) is moved off it with probability 1 - CONFIRM_SHARE: one essential knob, chosen from
the case's seed, is set to its disappearing value (the next one when that case would be invalid). The other
CONFIRM_SHARE of such cases run as drawn and keep confirming the cause (its finding count grows). A bug
that fires on 80% of the cases then costs about 8% of them once known, not 80%.

Raw findings are kept one per signature (kind, implementation, coarse class), so a second bug with the
same kind and class as a known one would be counted under the first and never triaged. A failing case that
meets no known cause of its kind family (every known trigger avoided, by steering or by the draw) therefore
gets the signature suffix "|beyond N known causes": a new raw finding for triage, one per class and number
of known causes, so it stays bounded.

Steering changes the case stream only after a cause is found, so a clean campaign draws exactly what it drew
before (and its shards together still judge exactly the unsharded cases); a campaign with findings steers by
what it has found, so its shards, each knowing only its own causes, may move different cases. report.json's
`steering` says how many cases were moved and how many kept confirming.
"""

from __future__ import annotations

import dataclasses
import random

from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.triage.minimize import with_knob
from moe_lora_fuzz.fuzz.triage.triager import _applicable, _targets

CONFIRM_SHARE = 0.1  # of the cases that meet a known trigger, this share runs as drawn (confirms the cause)
SALT = 0x57EE4


class Steering:
    def __init__(self, triage, interpreter: bool):
        self.triage, self.interpreter = triage, interpreter  # fuzz.triage.triager.CampaignTriage
        self.moved = self.confirming = self.beyond = 0

    def causes(self) -> list[dict]:
        """Explained root causes with at least one essential knob (a cause that fails on the simplest case, an
        intermittent one or an unexplained one has no trigger to avoid)."""
        t = self.triage.triager
        if t is None:
            return []
        return [c for c in t.causes if c.get("explained", True) and _targets(c)]

    def avoid(self, case: Case, fit=None) -> Case:
        """The case moved off every known trigger it meets, except for the confirming share. fit: the
        implementation's ImplProfile.fit (a moved case stays inside what it takes)."""
        meets = [c for c in self.causes() if _applicable(case, c)]
        if not meets:
            return case
        rng = random.Random(case.seed ^ SALT)
        if rng.random() < CONFIRM_SHARE:
            self.confirming += 1
            return case
        moved = case
        for cause in meets:
            if not _applicable(moved, cause):
                continue  # moving off an earlier cause moved it off this one too
            targets = list(_targets(cause).items())
            rng.shuffle(targets)
            for name, value in targets:
                try:
                    cand = with_knob(moved, name, value)
                    cand = (fit(cand) if fit else cand).validate(self.interpreter)
                except ValueError:
                    continue
                if not _applicable(cand, cause):
                    moved = cand
                    break
        self.moved += moved != case
        return moved

    def relabel(self, case: Case, v):
        """A failing verdict whose case meets no known cause of its family gets the "beyond" suffix."""
        if not v.failed:
            return v
        same = [c for c in self.causes() if c["family"] == family(v.kind)]
        if not same or any(_applicable(case, c) for c in same):
            return v
        self.beyond += 1
        return dataclasses.replace(v, signature=f"{v.signature}|beyond {len(same)} known causes")

    def summary(self) -> dict:
        return {
            "confirm_share": CONFIRM_SHARE,
            "known_triggers": len(self.causes()),
            "cases_moved": self.moved,
            "cases_confirming": self.confirming,
            "failures_beyond_known": self.beyond,
        }
