"""report.md: the campaign for a CI log or a GitHub step summary (`cat report.md >> $GITHUB_STEP_SUMMARY`), a
pure function of the report dict. See fuzz.outputs.report_views for what it shows."""

from __future__ import annotations

from moe_lora_fuzz.fuzz.outputs.report_commands import commands
from moe_lora_fuzz.fuzz.space.coverage import RATIO_BINS
from moe_lora_fuzz.fuzz.triage.classify import CLASSES, counts


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_md(report: dict) -> str:
    causes = report.get("root_causes") or []
    n = counts(causes)
    out = [
        f"## moe-lora-fuzz: {_cell(report.get('impl', ''))} on {report.get('device', '')}",
        "",
        f"{report.get('cases', 0)} cases in {report.get('elapsed_s', 0)} s ({report.get('cases_per_s', 0)} cases/s), "
        f"seed {report.get('seed', '')}, profile {report.get('profile', '')}"
        + (f", **interrupted by {report['interrupted']}**" if report.get("interrupted") else ""),
        "",
        f"**{len(causes)} root causes**: " + ", ".join(f"{v} {k}" for k, v in n.items()),
        "",
    ]
    for cls in CLASSES:
        mine = [c for c in causes if c.get("class", "bug") == cls]
        if not mine:
            continue
        out += [f"### {cls} ({len(mine)})", ""]
        for c in mine:
            note = ""
            if cls == "intermittent" and c.get("rate") is not None:
                note = f" (fails {c['rate']:.0%} of {c.get('rate_runs')} runs)"
            if cls == "precision":
                note = f" (within: {c.get('bound', '')})"
            untriaged = "" if c.get("triaged", True) else " (untriaged)"
            out += [
                f"- **{c['kind']}** x{len(c.get('findings', []))}{untriaged}{note}: {_cell(c['trigger'])}",
                f"  - minimal case: `{c.get('minimal_case') or '(see the repro file)'}`",
                "",
                "  ```bash",
                *(f"  {cmd}" for cmd in commands(c, c.get("impl") or report.get("impl", "")).values()),
                "  ```",
                "",
            ]
    cov = report.get("coverage") or {}
    hist = cov.get("ratio_histogram") or {}
    if hist:
        shown = [b for b in RATIO_BINS if any(b in bins for bins in hist.values())]  # above 2^0: over the bound
        out += ["### Error-to-bound ratio per dtype (cases per bin)", "", "| dtype | " + " | ".join(shown) + " |"]
        out += ["|---" * (len(shown) + 1) + "|"]
        for dtype, bins in hist.items():
            out.append(f"| {dtype} | " + " | ".join(str(bins.get(b, "")) for b in shown) + " |")
        out.append("")
    unreachable = cov.get("unreachable_edges") or []
    missing = [e for e in cov.get("missing_edges") or [] if e not in unreachable]
    until = cov.get("cases_until_every_edge")
    out += [
        "### Coverage",
        "",
        "- required edges: "
        + (
            f"never reached: {', '.join(missing)}"
            if missing
            else "all reached" + (f" after {until} cases" if until else "")
        ),
        *([f"- edges this implementation cannot reach: {', '.join(unreachable)}"] if unreachable else []),
        f"- knobs varied: {len(cov.get('knobs') or {})}; case classes: {len(cov.get('combinations') or {})}",
    ]
    if report.get("branches"):
        b = report["branches"]
        shown = ", ".join(f"{k}: {v}" for k, v in b.items()) if isinstance(b, dict) else ", ".join(map(str, b))
        out.append(f"- dispatch branches: {shown}")
    t = report.get("triage") or {}
    if t:
        out.append(
            f"- triage: {t.get('share_of_campaign', 0):.0%} of the campaign, "
            f"{t.get('not_triaged', 0)} findings untriaged, "
            f"{t.get('untriaged_root_causes', 0)} root causes untriaged"
        )
    corpus = report.get("corpus") or {}
    if corpus.get("replayed"):
        out.append(f"- corpus: {corpus['still_failing']} of {corpus['replayed']} earlier repros still fail")
    return "\n".join(out) + "\n"
