"""report.html and report.md (fuzz.outputs.report_views): content, escaping, self-containment, and a real headless
browser (Debian's chromium) rendering the page with no console message."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.outputs.report_html import render_html
from moe_lora_fuzz.fuzz.outputs.report_md import render_md
from moe_lora_fuzz.fuzz.outputs.report_views import commands, render_dir, write_views
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless browser: Debian's chromium is missing (scripts/setup.sh installs it when apt is usable)",
)


def _cause(cls: str, kind: str = "mismatch", trigger: str = "needs top_k=2; disappears with top_k=1") -> dict:
    cause = {
        "signature": f"wrong-output||x|{cls}",
        "kind": kind,
        "family": "wrong-output",
        "failure": "",
        "trigger": trigger,
        "essential": {"top_k": 2},
        "disappears_with": ["top_k=1"],
        "minimal_repro": f"/runs/a/minimal-c-{cls}-1234.json",
        "minimal_case": "top_k=2",
        "impl": "/src/my impl.py:fn",
        "triaged": True,
        "findings": [{"signature": "s", "kind": kind, "count": 3, "repro": f"/runs/a/repro-c-{cls}-1234.json"}],
        "class": cls,
    }
    if cls == "intermittent":
        cause.update(rate=0.2, rate_runs=10)
    if cls == "precision":
        cause["bound"] = "TF32 inputs"
    return cause


def _report(**extra) -> dict:
    edges = {e: 3 for e in REQUIRED_EDGES if e != "expand_split_k"}
    report = {
        "campaign": "20261206T000000-abc",
        "impl": "/src/my impl.py:fn",
        "device": "cpu",
        "profile": "premerge",
        "seed": 0,
        "cases": 120,
        "elapsed_s": 60.0,
        "cases_per_s": 2.0,
        "interrupted": None,
        "root_causes": [
            _cause("bug", trigger="needs <script>alert(1)</script> & top_k=2"),
            _cause("intermittent"),
            _cause("precision"),
        ],
        "triage": {"share_of_campaign": 0.18, "not_triaged": 0, "untriaged_root_causes": 0},
        "coverage": {
            "knobs": {"dtype": {"float16": 50, "bfloat16": 40, "float32": 30}, "top_k": {"1": 60, "2": 60}},
            "edges": edges,
            "missing_edges": ["expand_split_k"],
            "first_reached": {e: 1 for e in edges},
            "ratio_histogram": {"float16": {"2^-4": 80, "2^-3": 30, ">=2^4": 2}, "float32": {"2^-12": 30}},
            "timeline": [[0.0, 1], [5.0, 12], [10.0, 25], [15.0, 31]],
            "cases_until_every_edge": None,
        },
        "findings": [],
    }
    report.update(extra)
    return report


def test_markdown_lists_causes_by_class_with_exact_commands():
    md = render_md(_report(branches={"two_stage": 10, "one_shot": 0}))
    assert "**3 root causes**: 1 bug, 1 intermittent, 1 precision, 0 unchecked-precondition" in md
    assert md.index("### bug") < md.index("### intermittent") < md.index("### precision")
    assert "moe-lora-fuzz replay /runs/a/minimal-c-bug-1234.json --impl '/src/my impl.py:fn'" in md
    assert "moe-lora-fuzz minimize /runs/a/repro-c-bug-1234.json --out" in md
    assert "moe-lora-fuzz export /runs/a/minimal-c-bug-1234.json --out tests/regressions/test_c_bug_1234.py" in md
    assert "fails 20% of 10 runs" in md and "within: TF32 inputs" in md
    assert "never reached: expand_split_k" in md and "two_stage: 10" in md
    assert "| float16 |" in md and "triage: 18% of the campaign" in md


def test_builtin_implementations_need_no_impl_flag():
    cmds = commands(_cause("bug") | {"impl": "mutant:topk-row-index"}, "mutant:topk-row-index")
    assert "--impl" not in cmds["replay"] and "--impl" not in cmds["minimize"]


def test_html_is_self_contained_and_escaped():
    html = render_html(_report(branches={"two_stage": 10}))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)  # nothing fetched from a network
    assert "@import" not in html and "url(" not in html
    for section in ("Root causes", "Error-to-bound ratio", "knob by knob", "Required edges", "Dispatch branches"):
        assert section in html
    assert html.count("<svg") >= 3  # two dtype histograms and the cases-over-time curve
    assert "two_stage" in html.split("Dispatch branches")[1]
    no_branches = render_html(_report())
    assert "records no dispatch branches" in no_branches


def test_views_are_written_beside_the_report(tmp_path):
    path = tmp_path / "report-shard0of2.json"
    path.write_text("{}")
    write_views(path, _report())
    assert (tmp_path / "report-shard0of2.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "report-shard0of2.md").read_text().startswith("## moe-lora-fuzz")
    import json

    (tmp_path / "report.json").write_text(json.dumps(_report()))
    assert {p.name for p in render_dir(tmp_path)} >= {"report.html", "report.md"}


def _chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless run; console messages (any level) are logged to stderr as `...:CONSOLE:<line>] "text"`."""
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([BROWSER, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def _console(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]


@needs_browser
def test_a_page_with_a_script_error_is_seen_by_the_browser_check(tmp_path):
    """The check below can fail: the same browser run reports a broken page's script error."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body>x<script>notDefined();</script></body></html>")
    assert any("notDefined" in ln for ln in _console(_chromium(page, "--dump-dom")))


@needs_browser
def test_report_renders_in_a_headless_browser_without_console_messages(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(_report(branches={"two_stage": 10, "one_shot": 2})))
    proc = _chromium(page, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc) == [], _console(proc)
    assert 'data-rendered="ok"' in proc.stdout  # the inline script ran to its end
    assert "3 root causes" in proc.stdout
    shot = tmp_path / "report.png"
    proc = _chromium(page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0 and _console(proc) == [], proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_edges_the_implementation_cannot_reach_are_not_called_missing():
    report = _report()
    report["coverage"]["unreachable_edges"] = ["expand_split_k"]
    md, html = render_md(report), render_html(report)
    assert "never reached" not in md and "cannot reach: expand_split_k" in md
    assert "never reached" not in html and "cannot reach: expand_split_k" in html
