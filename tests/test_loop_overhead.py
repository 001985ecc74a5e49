"""The campaign loop's own work per case (issue 29: at 100 cases/s a case has ~10 ms, the oracle takes most of it).
The report's summaries of variant drawing and steering are built when report.json is written, not after every
case; the report written still holds them, current at the write."""

from __future__ import annotations

import json
from collections import Counter

from moe_lora_fuzz.fuzz.campaign import runner
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, run_campaign
from moe_lora_fuzz.fuzz.campaign.steer import Steering
from moe_lora_fuzz.fuzz.campaign.variant_draw import VariantDraw
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict

CASES = 60


class PassingWorker:
    """A stand-in worker: every case passes, at once (the loop's own cost is all there is)."""

    restarts = 0
    profile = None

    def __init__(self, device, impl, log=None, **kw):
        self.impl = impl

    def judge(self, case, *, timeout, **kw):
        return Verdict("pass", self.impl, "")

    def close(self):
        pass

    kill = close


def test_report_summaries_are_built_per_write_not_per_case(tmp_path, monkeypatch):
    """Before: variants.summary() and steer.summary() ran after each of the 60 cases. Now once per report.json
    written (REPORT_EVERY_S apart, here an hour: the first case's write and the final one), and the final report
    counts all 60 cases."""
    calls = Counter()
    variants_summary, steering_summary = VariantDraw.summary, Steering.summary

    def counted_variants(self, interpreter):
        calls["variants"] += 1
        return variants_summary(self, interpreter)

    def counted_steering(self):
        calls["steering"] += 1
        return steering_summary(self)

    monkeypatch.setattr(VariantDraw, "summary", counted_variants)
    monkeypatch.setattr(Steering, "summary", counted_steering)
    monkeypatch.setattr(runner, "Worker", PassingWorker)
    monkeypatch.setattr(runner, "REPORT_EVERY_S", 3600.0)
    cfg = CampaignConfig(device="cpu", max_cases=CASES, out=tmp_path, quiet=True, triage_share=0.0)
    run_campaign(cfg)
    report = json.loads(cfg.report_path.read_text())
    assert report["cases"] == CASES
    assert report["variants"]["first_minute"]["cases"] == CASES and report["variants"]["draw"] == "off"
    assert report["steering"]["cases_moved"] == 0
    assert 1 <= calls["variants"] <= 3 and 1 <= calls["steering"] <= 3, calls


def test_fingerprint_sees_a_replacement_at_the_replaced_objects_address():
    """The per-case fingerprint (fuzz.runtime.sandbox) now holds the namespace's values, not their ids: a value
    replaced after the old one was freed, at the same address (CPython's float free list hands it straight back),
    is still a change. Before, the ids matched and the replacement went unseen."""
    from moe_lora_fuzz.fuzz.runtime import sandbox

    sandbox.probe_value = float("1.25")
    try:
        base = sandbox.fingerprint()
        del sandbox.probe_value  # the old float is freed, unless the fingerprint holds it
        sandbox.probe_value = float("2.5")
        assert "sandbox.probe_value" in (sandbox.changed(base, sandbox.fingerprint()) or "")
    finally:
        del sandbox.probe_value
