"""The command line (`moe-lora-fuzz`, `python -m moe_lora_fuzz`; `python -m fuzz` in a checkout): `list` and
`run`'s usage errors (exit 2, one `error:` line) and a tiny
real campaign on the CPU (exit 0, report.json)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.kernels import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


def _fuzz(*args: str, timeout: float = 300, cwd: Path = ROOT, module: str = "moe_lora_fuzz"):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def _detail(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _refusal(capsys, device: str, *args: str):
    """A refusal that ends before any campaign. On the CPU suite main() runs in this process (already on the
    interpreter: no python and torch import to pay per case; the subprocess form of a refusal stays in
    test_run_out_is_a_file_exits_2 and test_bad_subcommand_exits_2). Elsewhere (the GPU suite: this process compiles
    for the GPU, so `--device cpu` could not be prepared here) a fresh python, as before."""
    if device != "cpu":
        return _fuzz(*args)
    from tests.test_reliability import _main

    return _main(capsys, *args)


def _assert_usage_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, _detail(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), _detail(proc)
    assert "Traceback" not in proc.stderr, _detail(proc)
    assert re.search(match, lines[0]), _detail(proc)


def test_list_prints_ours_and_every_mutant_with_its_description():
    proc = _fuzz("list")
    assert proc.returncode == 0, _detail(proc)
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert next(iter(rows)) == "ours"
    expected = {"ours"} | {f"mutant:{m}" for m in MUTANTS}
    assert expected <= set(rows), sorted(expected - set(rows))
    for m, mutant in MUTANTS.items():
        assert rows[f"mutant:{m}"].strip() and mutant.doc.startswith(rows[f"mutant:{m}"].strip().rstrip(".")), m
    assert len(MUTANTS) >= 1


def test_version():
    from moe_lora_fuzz.fuzz import __version__

    for module in ("moe_lora_fuzz", "fuzz"):  # the package, and the checkout's alias
        proc = _fuzz("--version", module=module)
        assert proc.returncode == 0 and proc.stdout.strip() == f"moe-lora-fuzz {__version__}", _detail(proc)
    assert _fuzz("run", "--help").stdout.startswith("usage: moe-lora-fuzz run")


def test_every_option_has_help_and_shows_its_default():
    from moe_lora_fuzz.fuzz.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "list", "replay", "minimize", "export"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, argparse.SUPPRESS) and action.dest != "help":
                assert f"(default: {action.default})" in " ".join(text.split()), f"{name} {action.dest}"


@pytest.mark.interpreter
def test_relative_paths_are_stored_absolute_and_require_edges_exits_1(tmp_path):
    """Run from another directory with relative --out and --impl paths: the report stores them absolute
    (replayable from anywhere); one case misses required edges, which --require-edges turns into exit 1."""
    (tmp_path / "my_impl.py").write_text("from tests.example_impl import torch_moe_lora as fn\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            "run",
            "--device",
            "cpu",
            "--max-cases",
            "1",
            "--out",
            "rel",
            "--impl",
            "my_impl.py:fn",
            "--require-edges",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 1, _detail(proc)
    report_path = tmp_path / "rel" / "report.json"
    assert proc.stdout.startswith(f"1 cases, 0 distinct findings, 0 root causes; report: {report_path}"), _detail(proc)
    warning = next(ln for ln in proc.stdout.splitlines() if ln.startswith("WARNING:"))
    assert "required edges never reached" in warning and warning.endswith("(--require-edges: exit 1)"), warning
    report = json.loads(report_path.read_text())
    assert report["impl"] == f"{tmp_path / 'my_impl.py'}:fn"
    assert report["harness"] == "0.2.0" and (report["commit"] is None or len(report["commit"]) == 40)
    reachable = [e for e in report["coverage"]["missing_edges"] if e not in report["coverage"]["unreachable_edges"]]
    assert reachable and all(e in warning for e in reachable)  # edges it cannot take are a note, not the warning


@pytest.mark.parametrize(
    "args, match",
    [
        pytest.param(["--shard", "3/2"], r"^error: --shard '3/2': needs n >= 1 and 0 <= i < n", id="shard-3-of-2"),
        pytest.param(["--shard", "0/0"], r"^error: --shard '0/0'", id="shard-0-of-0"),
        pytest.param(["--shard=-1/2"], r"^error: --shard '-1/2'", id="shard-negative"),
        pytest.param(["--shard", "half"], r"^error: --shard 'half': expected i/n", id="shard-not-i-n"),
        pytest.param(["--budget", "0"], r"^error: --budget: must be > 0", id="budget-0"),
        pytest.param(["--budget", "-5"], r"^error: --budget: must be > 0", id="budget-negative"),
        pytest.param(["--max-cases", "0"], r"^error: --max-cases: must be >= 1", id="max-cases-0"),
        pytest.param(["--seed", "-1"], r"^error: --seed: must be >= 0", id="seed-negative"),
        pytest.param(
            ["--sanitize-every", "5"], r"^error: --sanitize-every: needs --device cuda", id="sanitize-needs-gpu"
        ),
        pytest.param(
            ["--impl", "mutant:nope"], r"^error: --impl 'mutant:nope': unknown mutant", id="impl-unknown-mutant"
        ),
        pytest.param(
            ["--impl", "no_such_module_xyz:fn"],
            r"^error: --impl 'no_such_module_xyz:fn': cannot import",
            id="impl-missing-module",
        ),
    ],
)
def test_run_usage_errors_exit_2(tmp_path, capsys, device, args, match):
    out = tmp_path / "out"
    proc = _refusal(capsys, device, "run", "--device", "cpu", "--out", str(out), *args)
    _assert_usage_error(proc, match)
    assert not out.exists()  # refused before the campaign started
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "knob", ["MOE_LORA_FUZZ_WORKER_THREADS", "MOE_LORA_FUZZ_HELPERS_START", "MOE_LORA_FUZZ_HELPERS_BUILD"]
)
def test_run_refuses_a_bad_measurement_knob(tmp_path, capsys, device, monkeypatch, knob):
    """The environment's knobs (issue 29) are checked before the campaign starts: one line naming the variable."""
    monkeypatch.setenv(knob, "lots")
    out = tmp_path / "out"
    proc = _refusal(capsys, device, "run", "--device", "cpu", "--out", str(out))
    _assert_usage_error(proc, rf"^error: {knob} must be .*'lots'")
    assert not out.exists()


def test_run_out_is_a_file_exits_2(tmp_path):
    """--out naming an existing file is a usage error: one `error:` line naming --out, not a traceback."""
    out = tmp_path / "report-here"
    out.write_text("not a directory\n")
    proc = _fuzz("run", "--device", "cpu", "--max-cases", "1", "--out", str(out))
    _assert_usage_error(proc, r"--out|report-here")


def test_bad_subcommand_exits_2():
    proc = _fuzz("frobnicate")
    assert proc.returncode == 2, _detail(proc)
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr, _detail(proc)


@pytest.mark.interpreter
def test_run_three_cases_on_cpu(tmp_path):
    out = tmp_path / "campaign"
    proc = _fuzz("run", "--device", "cpu", "--max-cases", "3", "--out", str(out))
    assert proc.returncode == 0, _detail(proc)
    assert "Traceback" not in proc.stderr, _detail(proc)
    assert proc.stdout.startswith("3 cases, 0 distinct findings"), _detail(proc)
    report = json.loads((out / "report.json").read_text())
    assert report["cases"] == 3
    for key in ("kinds", "findings", "coverage"):
        assert key in report, sorted(report)
    assert sum(report["kinds"].values()) == 3
    assert report["kinds"].get("pass") == 3
    assert report["findings"] == [] and report["distinct_findings"] == 0
    assert report["impl"] == "ours" and report["device"] == "cpu" and report["shard"] == [0, 1]
    assert isinstance(report["coverage"], dict) and report["coverage"]
    assert not list(out.glob("repro-*.json"))


_DEVICE_FIRST = """
import sys
import moe_lora_fuzz.device

def chosen(name="auto"):  # the command's first step that may import triton: report what came before it, stop
    print("triton.language imported before use_device:", "triton.language" in sys.modules)
    sys.exit(0)

moe_lora_fuzz.device.use_device = chosen
from moe_lora_fuzz.fuzz.cli import main

main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--device", "cpu", "--out", "{tmp}/out"],
        ["replay", "tests/regressions/lora-grid-short.json", "--device", "cpu"],
        ["replay", "tests/regressions", "--device", "cpu"],
        ["minimize", "tests/regressions/lora-grid-short.json", "--device", "cpu", "--out", "{tmp}/min.json"],
        ["triage", "{tmp}", "--device", "cpu"],
    ],
    ids=lambda a: "-".join(a[:2]) if a[0] == "replay" else a[0],
)
def test_commands_choose_the_device_before_importing_triton(tmp_path, args):
    """`--device cpu` on a GPU machine needs TRITON_INTERPRET=1 set before triton.language is imported
    (moe_lora_fuzz.device); a command that imported it first (the CLI's console stream once did, through the repro
    module's kernels) refused the interpreter there, while a machine without a GPU never showed it."""
    script = tmp_path / "device_first.py"
    script.write_text(_DEVICE_FIRST)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout, as _fuzz runs it
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.stdout.strip() == "triton.language imported before use_device: False", _detail(proc)


@pytest.mark.interpreter
def test_replay_without_guards_passes_ours_and_sanitize_needs_a_gpu():
    repro = "tests/regressions/lora-grid-short.json"
    proc = _fuzz("replay", repro, "--impl", "ours", "--device", "cpu", "--no-guards")
    assert proc.returncode == 0 and proc.stdout.strip() == "pass", _detail(proc)
    proc = _fuzz("replay", repro, "--device", "cpu", "--no-guards")  # the recorded mutant: still wrong
    assert proc.returncode == 1 and proc.stdout.startswith("vacuous"), _detail(proc)
    proc = _fuzz("replay", repro, "--device", "cpu", "--sanitize")
    assert proc.returncode == 2 and "needs --device cuda" in proc.stderr, _detail(proc)


@pytest.mark.interpreter
def test_default_out_is_new_per_run_and_junitxml_lists_findings(tmp_path):
    """Two runs without --out in one folder: two fuzz-out/<time>-<impl> directories, neither refused; the
    JUnit XML has the campaign case and one failing case per finding, with its REPRO command."""
    import xml.etree.ElementTree as ET

    args = ("run", "--device", "cpu", "--max-cases", "2", "--triage-share", "0", "--impl", "mutant:routed-weight-twice")
    first = _fuzz(*args, "--junitxml", "j.xml", cwd=tmp_path)
    second = _fuzz(*args, cwd=tmp_path)
    assert first.returncode in (0, 1) and second.returncode == first.returncode, _detail(first) + _detail(second)
    outs = sorted((tmp_path / "fuzz-out").iterdir())
    assert len(outs) == 2 and all((o / "report.json").is_file() for o in outs), outs
    assert all(o.name.split("-", 1)[1].startswith("mutant-routed-weight-twice") for o in outs), outs
    report = json.loads((outs[0] / "report.json").read_text())
    suite = ET.parse(tmp_path / "j.xml").getroot()
    cases = suite.findall("testcase")
    assert suite.get("name") == "moe-lora-fuzz" and int(suite.get("tests")) == len(cases) == 1 + len(report["findings"])
    assert int(suite.get("failures")) == len(report["findings"]) == len(suite.findall("testcase/failure"))
    for f, case in zip(report["findings"], cases[1:], strict=True):
        assert (
            case.get("name") == f["signature"]
            and f"REPRO: moe-lora-fuzz replay {f['repro']}" in case.find("failure").text
        )


def test_junit_xml_of_hostile_text_is_well_formed():
    import xml.etree.ElementTree as ET

    from moe_lora_fuzz.fuzz.outputs.junit import junit_xml

    report = {"impl": "x\x1b[2J", "cases": 3, "findings": [{"signature": "a\x00b", "kind": "k<", "message": "m&\x07"}]}
    suite = ET.fromstring(junit_xml(report))
    failure = suite.find("testcase[@name='a\\x00b']/failure")
    assert failure is not None and failure.get("message") == "m&\\x07" and suite.get("failures") == "1"


def test_unpatched_interpreter_is_one_warning_line():
    """A triton the interpreter patch does not cover: one `warning:` line when the CPU device is prepared."""
    code = (
        "import moe_lora_fuzz.fuzz.runtime.interpreter as i; i.TESTED_TRITON = ('0.0.0',)\n"
        "from moe_lora_fuzz.fuzz.cli import _device\n"
        "_device('cpu'); _device('cpu')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 1, _detail(proc)
    assert lines[0].startswith("warning: Triton's interpreter left unpatched (triton ") and "not emulated" in lines[0]
