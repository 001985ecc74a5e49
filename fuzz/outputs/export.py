"""Turn a repro file into a standalone, portable pytest regression test (`moe-lora-fuzz export`).

The generated file holds the finding as data: every value from the repro (case, implementation name,
message) enters it through repr() of a str, never through string pasting into code or docstrings, and the
result is parsed (ast) before anyone writes it. It imports only what it uses (ruff-clean) and runs the case
through the public API (`moe_lora_fuzz.judge`), so it works wherever the package is installed.

What it runs: a repro file never chooses code to import, at export time or at test time. A finding of our own
kernels (`ours`, `mutant:<id>`) runs them; a finding of any other implementation needs the implementation
named by the exporter (`export --impl`, stored relative to the test file so the test moves with its
project) or by whoever runs the test (MOE_LORA_FUZZ_IMPL=..., which always wins).

A `crash` or `hang` finding becomes a test that runs the case in a subprocess, so the bug fails that test
instead of killing or stalling pytest.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from moe_lora_fuzz.fuzz.records.repro import Repro, is_builtin

DEFAULT_TIMEOUT_S = 300.0
IMPL_ENV = "MOE_LORA_FUZZ_IMPL"

HEADER = '''"""Regression test exported from a moe-lora-fuzz finding (`moe-lora-fuzz export`).

It fails while the bug is present and passes once it is fixed; KIND, RECORDED_IMPL
and MESSAGE say what was found. Run it with `pytest THIS_FILE` (`--moe-device cpu` or
`--moe-device cuda` chooses the device); MOE_LORA_FUZZ_IMPL=<implementation> runs
another implementation on the same case.
"""

{imports}

KIND = {kind}
# what the campaign ran (for reading only: never imported from here)
RECORDED_IMPL = {recorded}
# what this test runs: {impl_note}
IMPL = {impl}
DEVICE = {device}
MESSAGE = {message}
CASE = {case}
TIMEOUT_S = {timeout}


def _implementation():
    """{env} if set (a path: relative to the current folder), else IMPL
    (a path: relative to this file)."""
    if os.environ.get({env!r}):
        return os.environ[{env!r}]
    name = IMPL
    if name is None:
        pytest.fail(
            f"this finding was made with {{RECORDED_IMPL!r}}, which this test does not "
            "import on its own: set {env}=<implementation> "
            "(e.g. path/to/impl.py:function) to test it"
        )
    prefix, sep, rest = ("", "", name)
    if name.startswith(("vllm:", "sglang:")):
        prefix, sep, rest = name.partition(":")
    path, colon, func = rest.rpartition(":")
    if colon and path.endswith(".py"):
        rest = f"{{(Path(__file__).resolve().parent / path).resolve()}}:{{func}}"
    return prefix + sep + rest


def _skip_unless_device(device):
    if DEVICE == "cuda" and device != "cuda":
        pytest.skip("this finding was made on a GPU: run with --moe-device cuda")
'''

IN_PROCESS = """

def test_{name}(moe_device):
    _skip_unless_device(moe_device)
    from moe_lora_fuzz import Case, judge

    case = Case.from_dict(CASE)
    twin = KIND == "metamorphic"
    verdict = judge(case, _implementation(), moe_device, metamorphic=twin)
    assert verdict.kind == "pass", (
        f"{{verdict.kind}}: {{verdict.message}}\\nworst: {{verdict.worst}}"
    )
"""

SUBPROCESS = """
# The case killed or stalled its process: it runs in a child, so it fails this test instead of pytest.
CHILD = (
    "import json, sys\\n"
    "from moe_lora_fuzz import Case, judge\\n"
    "case = Case.from_dict(json.loads(sys.argv[1]))\\n"
    "v = judge(case, sys.argv[2], sys.argv[3])\\n"
    "print('pass' if v.kind == 'pass' else v.kind + ': ' + v.message)\\n"
)


def test_{name}(moe_device):
    _skip_unless_device(moe_device)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    if moe_device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, "-c", CHILD, json.dumps(CASE), _implementation(), moe_device]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: no verdict within {{TIMEOUT_S}} s")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines and lines[-1] == "pass", (
        f"exit {{proc.returncode}}\\n{{proc.stdout[-2000:]}}\\n{{proc.stderr[-2000:]}}"
    )
"""

IMPORTS = {
    IN_PROCESS: "import os\nfrom pathlib import Path\n\nimport pytest",
    SUBPROCESS: "import json\nimport os\nimport subprocess\nimport sys\nfrom pathlib import Path\n\nimport pytest",
}


def _literal(value, indent: int = 0) -> str:
    """A Python literal of JSON-like data (str, number, bool, None, list, dict), one item a line, long strings
    split into parenthesised pieces: it fits 88 columns (ruff's default line length) for any case. Strings go
    through repr(), so nothing in them can end the literal or act on a terminal."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = "".join(f"{inner}{_literal(k)}: {_literal(v, indent + 4)},\n" for k, v in sorted(value.items()))
        return "{\n" + items + pad + "}"
    if isinstance(value, list) and value:
        return "[\n" + "".join(f"{inner}{_literal(v, indent + 4)},\n" for v in value) + pad + "]"
    if isinstance(value, str) and len(repr(value)) > 60:
        pieces = [value[i : i + 40] for i in range(0, len(value), 40)]
        return "(\n" + "".join(f"{inner}{p!r}\n" for p in pieces) + pad + ")"
    return repr(value)


def exported_name(stem: str) -> str:
    safe = "".join(ch if ch.isalnum() else "_" for ch in stem.removeprefix("test_")).strip("_")
    return safe if safe.isidentifier() else f"fuzz_regression_{safe}".rstrip("_")


def portable_impl(impl: str, test_dir: Path) -> str:
    """An implementation name as the test stores it: a file path relative to the test's folder (the test and
    the implementation move together); names of our kernels, modules and installed frameworks unchanged."""
    prefix, sep, rest = impl.partition(":") if impl.startswith(("vllm:", "sglang:")) else ("", "", impl)
    path, colon, func = rest.rpartition(":")
    if colon and path.endswith(".py"):
        rest = f"{Path(os.path.relpath(Path(path).resolve(), test_dir.resolve())).as_posix()}:{func}"
    return prefix + sep + rest


def export_test(repro: Repro, name: str, impl: str | None = None, test_dir: Path | None = None) -> str:
    """The test module's text. impl: the implementation the test runs (the exporter's --impl); None runs the
    recorded one only when it is our own code, and leaves the choice to MOE_LORA_FUZZ_IMPL otherwise.
    test_dir: where the test will live (file paths are stored relative to it; default: the current folder).
    ValueError if it would not be valid Python (it always should be)."""
    v = repro.verdict
    if impl is None and is_builtin(repro.impl):
        impl = repro.impl
    if impl is not None:
        impl = portable_impl(impl, test_dir or Path.cwd())
    note = "given to export" if impl != repro.impl else "our own kernels, as recorded"
    if impl is None:
        note = f"none: set {IMPL_ENV} (the repro named external code, which is never imported unasked)"
    body = SUBPROCESS if v.kind in ("crash", "hang") else IN_PROCESS
    text = HEADER.format(
        imports=IMPORTS[body],
        kind=_literal(v.kind),
        recorded=_literal(repro.impl),
        impl=_literal(impl),
        impl_note=note,
        device=_literal(repro.device),
        message=_literal(v.message[:2000]),
        case=_literal(json.loads(json.dumps(repro.case.to_dict()))),
        timeout=_literal(float(repro.case_timeout_s or DEFAULT_TIMEOUT_S)),
        env=IMPL_ENV,
    )
    text += body.format(name=exported_name(name))
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f"the exported test would not parse ({e.msg}, line {e.lineno})") from None
    return text
