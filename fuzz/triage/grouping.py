"""Grouping triaged findings into root causes (the pure part of triage: reads each finding's "triage" entry, runs
nothing). Used by campaigns (fuzz.triage.triager.CampaignTriage), offline triage and merges of shard reports."""

from __future__ import annotations

from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.triage.classify import class_fields


def group_findings(findings: list[dict], impl: str = "") -> list[dict]:
    """Root causes of a list of report findings (each may carry "triage"): one entry per root key, in order
    of first appearance. Findings without triage (the budget ran out before they were run again) are grouped by
    kind and failure site, marked not triaged: one entry per place that failed, never one per occurrence."""
    causes: dict = {}
    for f in findings:
        info = f.get("triage")
        key = info["key"] if info else f"untriaged|{_site(f['signature'])}"
        summary = {
            "signature": f["signature"],
            "kind": f["kind"],
            "count": f.get("count", 1),
            "repro": f["repro"],
            "via": info["via"] if info else "not triaged",
        }
        for also in (info or {}).get("also", []):  # a finding showing several known causes counts in each
            if also in causes:
                causes[also]["findings"].append(summary)
        if key not in causes:
            if info:
                causes[key] = {
                    "signature": key,
                    "kind": info["kind"],
                    "family": info["family"],
                    "failure": info["failure"],
                    "trigger": info["trigger"],
                    "essential": info["essential"],
                    "disappears_with": info["disappears_with"],
                    "minimal_repro": info["minimal_repro"],
                    "minimal_case": info["minimal_case"],
                    "impl": info.get("impl", impl),
                    "triaged": not info["via"].startswith("provisional"),
                    "findings": [],
                    **class_fields(f["kind"], f.get("message", ""), info),
                }
            else:
                causes[key] = {
                    "signature": key,
                    "kind": f["kind"],
                    "family": family(f["kind"]),
                    "failure": "",
                    "trigger": (f.get("triage_note") or "not triaged")
                    + f", grouped by kind and failure site {_site(f['signature'])!r}"
                    + " (moe-lora-fuzz triage DIR tries again)",
                    "essential": {},
                    "disappears_with": [],
                    "minimal_repro": f["repro"],
                    "minimal_case": "",
                    "impl": impl,
                    "triaged": False,
                    "findings": [],
                    **class_fields(f["kind"], f.get("message", "")),
                }
        cause = causes[key]
        cause["findings"].append(summary)
        needs = _needs(info["trigger"]) if info and not info["via"].startswith("provisional") else ""
        if needs and needs not in [_needs(t) for t in [cause["trigger"], *cause.get("alternatives", [])]]:
            # joined through other, equally minimal sizes (Triager._join): the other ways it shows
            cause.setdefault("alternatives", []).append(info["trigger"])
            cause["trigger"] += f"; or needs {needs}"
    return list(causes.values())


def _site(signature: str) -> str:
    """A signature's kind and failure site: "exception|ValueError@file:function", "crash|broke:AcceleratorError",
    or for wrong values (whose signature goes on with the case's knobs) "mismatch|<implementation>"."""
    return "|".join(signature.split("|")[:2])


def _needs(trigger: str) -> str:
    """The knobs a trigger line says the failure needs ("num_slots=2 and align_slack=1")."""
    return trigger.partition("needs ")[2].partition(";")[0]


def group_reports(reports: list[dict]) -> list[dict]:
    """Root causes over several campaign reports (e.g. a nightly's shards): findings of all of them grouped
    by root key. Pure: reads each finding's "triage" entry, runs nothing."""
    findings = []
    for r in reports:
        for f in r.get("findings", []):
            info = f.get("triage")
            findings.append(dict(f, triage=dict(info, impl=info.get("impl", r.get("impl", ""))) if info else None))
    return group_findings(findings)
