"""`moe-lora-fuzz export` never names code to import unless a command line says so, the test it writes is
portable (moves with its project) and ruff-clean, and text from a repro file never reaches the terminal raw.

A repro file is data anyone can hand you: here its `impl` names `evil.py:f`, a file whose import leaves a marker
behind. Neither export, nor the exported test, nor replay/minimise may import it unasked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the plugin by name where this checkout is not pip-installed; an installed one is loaded by its entry point
PLUGIN = [] if any(ep.name == "moe_lora_fuzz" for ep in entry_points(group="pytest11")) else [
    "-p", "moe_lora_fuzz.fuzz.pytest_plugin"
]  # fmt: skip
RECORDED = ROOT / "tests/regressions/routed-weight-twice.json"  # a mismatch of mutant:routed-weight-twice
ESC = "\x1b]0;owned\x07\x1b[2J"  # a title change and a screen clear


def _cli(*args, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "moe_lora_fuzz", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


def _pytest(test: Path, env=None) -> subprocess.CompletedProcess:
    """pytest on an exported test from its own folder, as a user's project runs it (the plugin by name: this
    checkout is not pip-installed)."""
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN]
    return subprocess.run(
        [*cmd, "--moe-device", "cpu", test.name], cwd=test.parent, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(a repro naming evil.py:f as its implementation, the marker evil.py writes when imported)."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "some" / "dir").mkdir(parents=True)
    evil = tmp_path / "some" / "dir" / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef f(**kw):\n    pass\n")
    data = json.loads(RECORDED.read_text())
    data["impl"] = f"{evil}:f"
    repro = tmp_path / "repro-evil.json"
    repro.write_text(json.dumps(data))
    return repro, marker


def test_export_refuses_a_repro_naming_external_code(evil, tmp_path):
    repro, marker = evil
    proc = _cli("export", repro, "--out", tmp_path / "test_evil.py")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "never chooses code to import" in lines[0] and "--impl" in lines[0]
    assert not (tmp_path / "test_evil.py").exists() and not marker.exists()


@pytest.mark.interpreter
def test_exported_test_runs_only_what_the_exporter_named(evil, tmp_path):
    """--impl ours: the test runs our kernels on the evil repro's case; evil.py is never imported, not by
    export, not by pytest; MOE_LORA_FUZZ_IMPL on the test's command line picks another implementation."""
    repro, marker = evil
    test = tmp_path / "proj" / "test_evil.py"
    assert _cli("export", repro, "--out", test, "--impl", "ours").returncode == 0
    text = test.read_text()
    assert "IMPL = 'ours'" in text and str(marker.parent) not in text.split("RECORDED_IMPL", 1)[0]
    proc = _pytest(test)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]
    assert not marker.exists()
    env = dict(os.environ, MOE_LORA_FUZZ_IMPL="mutant:routed-weight-twice")
    proc = _pytest(test, env)
    assert proc.returncode == 1 and "1 failed" in proc.stdout and "mismatch" in proc.stdout, proc.stdout[-3000:]
    assert not marker.exists()


def test_exported_test_of_external_code_without_an_implementation_fails_saying_how(evil, tmp_path):
    """A test text built for an external finding with no implementation given imports nothing and fails
    with the way out (set MOE_LORA_FUZZ_IMPL), never passes vacuously."""
    from moe_lora_fuzz.fuzz.outputs.export import export_test
    from moe_lora_fuzz.fuzz.records.repro import load

    repro, marker = evil
    test = tmp_path / "test_unnamed.py"
    test.write_text(export_test(load(repro), "test_unnamed", impl=None, test_dir=tmp_path))
    assert "IMPL = None" in test.read_text()
    proc = _pytest(test)
    assert proc.returncode == 1 and "MOE_LORA_FUZZ_IMPL" in proc.stdout, proc.stdout[-3000:]
    assert not marker.exists()


@pytest.mark.interpreter
def test_exported_test_is_portable_and_ruff_clean(tmp_path):
    """--impl names a file: the test stores it relative to itself, so the project can move; ruff (default
    rules plus pycodestyle, pyflakes, isort, bugbear at the default line length) finds nothing."""
    proj = tmp_path / "proj"
    (proj / "impl").mkdir(parents=True)
    shutil.copy(ROOT / "examples/my_kernel.py", proj / "impl" / "my_kernel.py")
    test = proj / "tests" / "test_rw.py"
    proc = _cli("export", RECORDED, "--out", test, "--impl", proj / "impl/my_kernel.py:moe_lora")
    assert proc.returncode == 0, proc.stderr
    assert "IMPL = '../impl/my_kernel.py:moe_lora'" in test.read_text()
    ruff = shutil.which("ruff")
    if ruff is not None:  # the test extra installs it; the check below runs without it too
        lint = subprocess.run(
            [ruff, "check", "--isolated", "--no-cache", "--select", "E,F,W,I,B", str(test)],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout
    compile(test.read_text(), str(test), "exec")
    moved = tmp_path / "elsewhere" / "proj"
    shutil.move(proj, moved)
    proc = _pytest(moved / "tests" / "test_rw.py")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:]


def test_repro_text_never_reaches_the_terminal_raw(tmp_path):
    """Escape codes in a repro's implementation name come back escaped (\\x1b), in replay's and export's
    error lines alike."""
    data = json.loads(RECORDED.read_text())
    data["impl"] = f"evil{ESC}.py:f"
    repro = tmp_path / "repro-esc.json"
    repro.write_text(json.dumps(data))
    for args in (("replay", repro, "--device", "cpu"), ("export", repro, "--out", tmp_path / "test_x.py")):
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "\x1b" not in proc.stderr + proc.stdout and "\x07" not in proc.stderr
        assert "\\x1b]0;owned\\x07" in proc.stderr, proc.stderr


def test_root_causes_from_report_files_are_printed_escaped(capsys):
    from moe_lora_fuzz.fuzz.cli import _print_root_causes

    _print_root_causes([{"kind": f"mismatch{ESC}", "findings": [1], "trigger": f"t{ESC}", "minimal_repro": "m\n"}])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out and "m\\n" in out


def test_multi_line_summaries_keep_their_lines_and_lose_their_escapes():
    from moe_lora_fuzz.fuzz.escape import printable, printable_lines

    assert (
        printable_lines(f"merged 2 reports\n  cause: t{ESC}\n")
        == "merged 2 reports\n  cause: t\\x1b]0;owned\\x07\\x1b[2J\n"
    )
    assert printable("plain text, é, 中") == "plain text, é, 中"  # printable text is left alone
    assert printable("a\u202eb\x9bc\x7f") == "a\\u202eb\\x9bc\\x7f"  # bidi override, C1 CSI, DEL
