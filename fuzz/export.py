"""Turn a repro file into a standalone pytest regression test."""

from __future__ import annotations

import json

from .repro import Repro

TEMPLATE = '''"""Regression test exported from a fuzz finding: {kind} in {impl}.

Finding: {message}
It fails while the bug is present and passes once it is fixed.
"""

import json

import pytest

from fuzz.case import Case
from fuzz.oracle import check

CASE = json.loads({case_json!r})
IMPL = {impl!r}
DEVICE = {device!r}


def test_{name}(device):
    if DEVICE == "cuda" and device != "cuda":
        pytest.skip("this finding was made on a GPU: run with --device cuda")
    verdict = check(Case.from_dict(CASE), IMPL, device)
    assert verdict.kind == "pass", f"{{verdict.kind}}: {{verdict.message}}\\nworst: {{verdict.worst}}"
'''


def export_test(repro: Repro, name: str) -> str:
    safe = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "fuzz_regression"
    return TEMPLATE.format(kind=repro.verdict.kind, impl=repro.impl, message=repro.verdict.message[:300],
                           case_json=json.dumps(repro.case.to_dict(), sort_keys=True), device=repro.device,
                           name=safe)
