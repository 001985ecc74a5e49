"""Turn a repro file into a standalone pytest regression test.

The generated file holds the finding as data: every value from the repro (case, implementation name,
message) enters it through repr() of a str, never through string pasting into code or docstrings, and the
result is parsed (ast) before anyone writes it. A `crash` or `hang` finding becomes a test that runs the
case in a subprocess, so the bug fails that test instead of killing or stalling pytest.
"""

from __future__ import annotations

import ast
import json

from .repro import Repro

DEFAULT_TIMEOUT_S = 300.0

HEADER = '''"""Regression test exported from a fuzz finding (`moe-lora-fuzz export`).

It fails while the bug is present and passes once it is fixed; KIND, IMPL and MESSAGE below say what was found.
"""

import json
import os
import subprocess
import sys

import pytest

from moe_lora_fuzz.fuzz.case import Case
from moe_lora_fuzz.fuzz.oracle import check

KIND = {kind!r}
IMPL = {impl!r}
DEVICE = {device!r}
MESSAGE = {message!r}
CASE_JSON = {case_json!r}
CASE = json.loads(CASE_JSON)
TIMEOUT_S = {timeout!r}


def _skip_unless_device(device):
    if DEVICE == "cuda" and device != "cuda":
        pytest.skip("this finding was made on a GPU: run with --device cuda")
'''

IN_PROCESS = """

def test_{name}(device):
    _skip_unless_device(device)
    verdict = check(Case.from_dict(CASE), IMPL, device)
    assert verdict.kind == "pass", f"{{verdict.kind}}: {{verdict.message}}\\nworst: {{verdict.worst}}"
"""

SUBPROCESS = """
# The case killed or stalled its process: it runs in a child, so it fails this test instead of pytest.
CHILD = (
    "import json, sys\\n"
    "from fuzz.case import Case\\n"
    "from fuzz.oracle import check\\n"
    "v = check(Case.from_dict(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3])\\n"
    "print('pass' if v.kind == 'pass' else v.kind + ': ' + v.message)\\n"
)


def test_{name}(device):
    _skip_unless_device(device)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, CASE_JSON, IMPL, device], capture_output=True,
                              text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: no verdict within {{TIMEOUT_S}} s")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines and lines[-1] == "pass", (
        f"exit {{proc.returncode}}\\n{{proc.stdout[-2000:]}}\\n{{proc.stderr[-2000:]}}")
"""


def exported_name(stem: str) -> str:
    safe = "".join(ch if ch.isalnum() else "_" for ch in stem.removeprefix("test_")).strip("_")
    return safe if safe.isidentifier() else f"fuzz_regression_{safe}".rstrip("_")


def export_test(repro: Repro, name: str) -> str:
    """The test module's text; ValueError if it would not be valid Python (it always should be)."""
    v = repro.verdict
    text = HEADER.format(
        kind=v.kind,
        impl=repro.impl,
        device=repro.device,
        message=v.message[:2000],
        case_json=json.dumps(repro.case.to_dict(), sort_keys=True),
        timeout=float(repro.case_timeout_s or DEFAULT_TIMEOUT_S),
    )
    body = SUBPROCESS if v.kind in ("crash", "hang") else IN_PROCESS
    text += body.format(name=exported_name(name))
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f"the exported test would not parse ({e.msg}, line {e.lineno})") from None
    return text
