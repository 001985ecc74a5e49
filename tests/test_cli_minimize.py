"""`python -m fuzz minimize`: exit codes and output, on a stored finding (exit 0, a smaller case that still fails
the same way) and on a case that no longer fails (exit 2, one `error:` line, no file written)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.judgement.oracle import family
from moe_lora_fuzz.fuzz.records.repro import load, save

pytestmark = pytest.mark.interpreter  # the stored findings are CPU repros, minimised on the interpreter

ROOT = Path(__file__).resolve().parents[1]
FINDING = ROOT / "tests/regressions/disabled-adapter-written.json"


def _minimize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fuzz", "minimize", *args, "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_minimize_writes_a_smaller_case_with_the_same_signature(tmp_path):
    """The stored finding, grown in sizes that do not matter to it, comes back smaller, still failing."""
    stored = load(FINDING)
    grown = tmp_path / "grown.json"
    save(
        dataclasses.replace(
            stored, case=stored.case.replace(m=8, k_dim=40, n_dim=8, slotting="no_base", strided=True, extra_cols=1)
        ),
        grown,
    )
    out = tmp_path / "min.json"
    proc = _minimize(str(grown), "--out", str(out), "--budget", "30")
    assert proc.returncode == 0, proc.stderr
    assert f"written to {out}" in proc.stdout
    before, after = load(grown), load(out)
    # the same failure (kind family), not the same case class: the minimiser may drop dtype/layout knobs
    assert family(after.verdict.kind) == family(before.verdict.kind) and after.impl == before.impl
    assert after.case != before.case
    sizes = ("m", "top_k", "num_experts", "num_slots", "rank", "k_dim", "n_dim", "extra_cols")
    assert all(getattr(after.case, s) <= getattr(before.case, s) for s in sizes)
    assert sum(getattr(after.case, s) for s in sizes) < sum(getattr(before.case, s) for s in sizes)
    assert after.case.disabled and not after.case.strided  # the bug needs a disabled slot, not strided views


def test_minimize_a_case_that_passes_exits_2(tmp_path):
    out = tmp_path / "min.json"
    proc = _minimize(str(FINDING), "--out", str(out), "--impl", "ours", "--budget", "5")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("minimising")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "passes" in lines[0], proc.stderr
    assert not out.exists()


def test_minimize_malformed_file_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    proc = _minimize(str(bad), "--out", str(tmp_path / "min.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
