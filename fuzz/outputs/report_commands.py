"""The exact commands a report shows for one root cause (replay, minimise again, export): one function that
report.json's views (fuzz.outputs.report_html, fuzz.outputs.report_md, fuzz.outputs.report_views) all use.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from moe_lora_fuzz.fuzz.records.repro import is_builtin

CLI = "moe-lora-fuzz"


def commands(cause: dict, impl: str) -> dict:
    """The exact commands for one root cause: replay its minimal repro, minimise its first raw repro again,
    export the minimal repro as a regression test."""
    minimal = cause.get("minimal_repro") or ""
    raw = (cause.get("findings") or [{}])[0].get("repro", minimal)
    flag = "" if is_builtin(impl) else f" --impl {shlex.quote(impl)}"
    again = Path(raw).with_name("again-" + Path(raw).name)
    stem = Path(minimal).stem.replace("-", "_").replace("minimal_", "test_").replace("repro_", "test_")
    return {
        "replay": f"{CLI} replay {shlex.quote(minimal)}{flag}",
        "minimize": f"{CLI} minimize {shlex.quote(raw)} --out {shlex.quote(str(again))}{flag}",
        "export": f"{CLI} export {shlex.quote(minimal)} --out tests/regressions/{stem[:60]}.py",
    }
