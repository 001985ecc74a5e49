"""Views of a campaign report for people: report.html (a browser) and report.md (a CI log or GitHub step
summary), written beside report.json every time it is written (after findings, every few cases, at the end
and on SIGINT/SIGTERM). Both are pure functions of the report dict (fuzz.outputs.report_html and report_md),
so `moe-lora-fuzz triage` and `merge` outputs can be rendered the same way (`render_dir`).

What both show: the root causes by class with their trigger, minimal case and the exact replay / minimise /
export commands; the error-to-bound ratio per dtype; knob-by-knob coverage; required edges; dispatch branches
(a report's `branches`, when an adapter records them); cases/s over time; triage's share of the campaign.
"""

from __future__ import annotations

import sys
from pathlib import Path

from moe_lora_fuzz.fuzz.outputs.report_commands import CLI, commands  # noqa: F401 (tests import them from here)
from moe_lora_fuzz.fuzz.records.repro import write_atomic


def view_paths(report_path: Path) -> tuple[Path, Path]:
    return report_path.with_suffix(".html"), report_path.with_suffix(".md")


def write_views(report_path: Path, report: dict) -> None:
    """Write report.html and report.md beside report.json; a rendering error is a warning, never the end of
    a campaign (the JSON is already written)."""
    from moe_lora_fuzz.fuzz.outputs.report_html import render_html
    from moe_lora_fuzz.fuzz.outputs.report_md import render_md

    html_path, md_path = view_paths(Path(report_path))
    try:
        write_atomic(html_path, render_html(report))
        write_atomic(md_path, render_md(report))
    except Exception as e:  # noqa: BLE001 (a view must not take the campaign down; the JSON is the record)
        print(f"WARNING: report views not written: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def render_dir(directory: Path) -> list[Path]:
    """Render the views of every report*.json in a directory (after triage or merge)."""
    import json

    out = []
    for p in sorted(Path(directory).glob("report*.json")):
        write_views(p, json.loads(p.read_text()))
        out += list(view_paths(p))
    return out
