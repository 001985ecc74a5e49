"""Fault injection: the campaign under kill -9, SIGTERM at any moment (shutdown included), a full disk, a second
writer and hostile output directories. The invariant, counted after every fault: findings lost or hidden = 0.

- on disk: every repro-*.json in --out;
- reported: the findings of report.json, plus what --resume and merge recover from repro files it does not list
  (fuzz.records.outdir.findings_on_disk: the report may lag the disk by one finding after a kill -9, never more);
- announced: FINDING lines on the console: each names a file on disk, or came with the whole repro file
  printed (UNSAVED FINDING, a full disk);
- lost = announced or on disk but not reported (after recovery); hidden = reported without its file on disk.

The pre-merge tests inject a few faults each (a kill -9, a SIGTERM, a full tmpfs or a simulated ENOSPC, two
writers, 30 hostile inputs). `test_many_faults` (slow) does many random kill -9 / SIGTERM runs; its figures:

    FAULT_RUNS=20 python -m pytest tests/test_faults.py -m slow -s --device cpu -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.campaign import lifecycle
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig
from moe_lora_fuzz.fuzz.cli import main
from moe_lora_fuzz.fuzz.judgement.verdict import Verdict
from moe_lora_fuzz.fuzz.outputs.campaign_record import Report
from moe_lora_fuzz.fuzz.records import outdir

pytestmark = pytest.mark.interpreter
ROOT = Path(__file__).resolve().parents[1]
# a plain-torch implementation with two bugs: about half of all cases fail, in a handful of signatures
IMPL = f"{ROOT}/tests/two_bug_impl.py:two_bugs"
CASES = 10


def _args(out: Path, *extra: str, budget: float = 60, cases: int = CASES) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fuzz",
        "run",
        "--device",
        "cpu",
        "--impl",
        IMPL,
        "--budget",
        str(budget),
        "--max-cases",
        str(cases),
        "--triage-share",
        "0",
        "--precompile",
        "0",
        "--out",
        str(out),
        *extra,
    ]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def _run(out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_args(out, *extra, **kw), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def _start(out: Path, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        _args(out, *extra, **kw), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _announced(stderr: str) -> tuple[set, int]:
    """Repro names announced as saved, and how many findings were printed whole because they were not."""
    saved = {Path(p).name for p in re.findall(r"REPRO: moe-lora-fuzz replay (\S+)", stderr)}
    return saved, stderr.count("UNSAVED FINDING")


def audit(out: Path, stderr: str = "") -> dict:
    """The invariant's counts for one output directory (see the module docstring)."""
    on_disk = {p.name for p in out.glob("repro-*.json")}
    report = outdir.read_report(out / "report.json") if (out / "report.json").exists() else None
    listed = {Path(f["repro"]).name for f in report["findings"]} if report else set()
    recovered = {
        Path(f["repro"]).name for f in outdir.findings_on_disk(out, report["findings"] if report else [], None, set())
    }
    saved, unsaved = _announced(stderr)
    return {
        "on_disk": len(on_disk),
        "reported": len(listed),
        "recovered": len(recovered),
        "lost": len((on_disk | saved) - listed - recovered),
        "hidden": len(listed - on_disk),
        "unsaved_printed": unsaved,
        "tracebacks": stderr.count("Traceback"),
    }


def _signatures(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    return {f["signature"]: f["count"] for f in report["findings"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An undisturbed campaign of CASES cases: the findings every faulted-and-resumed one must end with."""
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = _run(out)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["cases"] == CASES and report["next_index"] == CASES and report["findings"]
    return {"signatures": _signatures(out), "kinds": report["kinds"], "out": out}


def _fault_then_resume(out: Path, delay: float, sig: int) -> dict:
    """Start a campaign, send `sig` after `delay` s, audit, then --resume it to CASES cases and audit again."""
    proc = _start(out)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    first = audit(out, err) if out.exists() else {"lost": 0, "hidden": 0, "tracebacks": err.count("Traceback")}
    if sig == signal.SIGTERM:  # 143 while the campaign runs; killed by it (-15) before or after; or done
        assert proc.returncode in (143, -15, 0, 1), err[-3000:]
        if proc.returncode == 143:
            assert (out / "report.json").is_file()  # written on the way out, also at shutdown
    resumed = _run(out, "--resume") if out.exists() else _run(out)
    assert resumed.returncode in (0, 1), resumed.stderr[-3000:]
    second = audit(out, resumed.stderr)
    return {"first": first, "second": second, "rc": proc.returncode}


def _check_against(out: Path, reference: dict, faulted: dict) -> None:
    for stage in ("first", "second"):
        assert faulted[stage]["lost"] == 0 and faulted[stage]["hidden"] == 0, faulted
        assert faulted[stage]["tracebacks"] == 0, faulted
    report = json.loads((out / "report.json").read_text())
    # resumed at the right index: every case judged exactly once, the same findings with the same counts
    assert report["cases"] == CASES and report["next_index"] == CASES, report["cases"]
    assert report["kinds"] == reference["kinds"]
    assert _signatures(out) == reference["signatures"]


def test_kill9_mid_campaign_then_resume(tmp_path, reference):
    """kill -9 once findings are being written; --resume ends with exactly the undisturbed campaign's findings."""
    out = tmp_path / "out"
    faulted = _fault_then_resume(out, 9.0, signal.SIGKILL)
    _check_against(out, reference, faulted)


@pytest.mark.slow  # pre-merge: test_reliability's interrupt test and the shutdown test below cover SIGTERM
def test_sigterm_then_resume(tmp_path, reference):
    out = tmp_path / "out"
    faulted = _fault_then_resume(out, 8.0, signal.SIGTERM)
    _check_against(out, reference, faulted)


def test_resume_rebuilds_a_missing_or_stale_report_from_the_repro_files(tmp_path, reference):
    """report.json deleted, or older than the repro files (one dropped from its list): --resume's starting point
    (fuzz.records.outdir.previous_report) lists every repro on disk, marked as recovered."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference["out"], out)
    report = json.loads((out / "report.json").read_text())
    cfg = CampaignConfig(impl=IMPL, out=out, resume=True, seed=report["seed"], shard=(0, 1))
    stale = dict(report, findings=report["findings"][1:])
    (out / "report.json").write_text(json.dumps(stale))
    old = outdir.previous_report(cfg)
    assert {f["signature"] for f in old["findings"]} == set(reference["signatures"])
    assert [f["triage_note"] for f in old["findings"] if f.get("triage_note", "").startswith("not triaged: rec")]
    (out / "report.json").unlink()
    old = outdir.previous_report(cfg)
    assert {f["signature"] for f in old["findings"]} == set(reference["signatures"]) and old["cases"] == 0


def test_resume_keeps_triage_already_done(tmp_path):
    """A finding the killed session had minimised stays a known cause: later findings attach to it instead of
    opening a second root cause for the same bug."""
    from moe_lora_fuzz.fuzz.triage.offline import seed_triage
    from moe_lora_fuzz.fuzz.triage.triager import CampaignTriage

    info = {"key": "k", "via": "minimised (3 runs)", "kind": "mismatch", "family": "wrong", "failure": "",
            "trigger": "needs x", "minimal_repro": "m.json", "essential": {}, "disappears_with": [],
            "minimal_case": ""}  # fmt: skip
    cfg = CampaignConfig(out=tmp_path, quiet=True)
    report = Report(cfg, env={})
    report.findings = {"s": {"signature": "s", "kind": "mismatch", "count": 1, "repro": "r.json", "triage": info}}
    triage = CampaignTriage(cfg)
    seed_triage(triage, report)
    assert triage.triager.causes == [info] and triage.triager.reps == [info]


def test_signal_during_final_shutdown_still_writes_the_report(tmp_path):
    """Before: SIGTERM while the worker was being closed escaped as a runner.Interrupted traceback, exit 1, and
    report.json was not rewritten. Now shutdown and finish catch it: marked, closed, written."""
    cfg = CampaignConfig(out=tmp_path, quiet=True)

    class ClosingWorker:
        killed = closed = 0

        def close(self):
            self.closed += 1
            raise lifecycle.Interrupted(signal.SIGTERM)

        def kill(self):
            self.killed += 1

    report, worker = Report(cfg, env={}, owned=True), ClosingWorker()
    report.cases = 3
    lifecycle.shutdown(report, None, worker)
    assert report.interrupted == "SIGTERM" and worker.closed == 1 and worker.killed == 1
    lifecycle.finish(report, None, None)
    assert json.loads(cfg.report_path.read_text())["interrupted"] == "SIGTERM"

    class Once:  # a signal during the final write: written again, never left unwritten
        calls = 0

    def write_interrupted(every: float = 0.0, _real=Report.write):
        Once.calls += 1
        if Once.calls == 1:
            raise lifecycle.Interrupted(signal.SIGINT)
        _real(report2)

    cfg2 = CampaignConfig(out=tmp_path / "two", quiet=True)
    report2 = Report(cfg2, env={}, owned=True)
    report2.write = write_interrupted
    lifecycle.finish(report2, None, None)
    assert Once.calls == 2 and report2.interrupted == "SIGINT" and cfg2.report_path.is_file()
    # interrupted before the report to resume was read: that report is left as it was, not replaced
    cfg3 = CampaignConfig(out=tmp_path / "three", quiet=True)
    cfg3.out.mkdir()
    cfg3.report_path.write_text("{}")
    lifecycle.finish(Report(cfg3, env={}, interrupted="SIGTERM"), None, None)
    assert cfg3.report_path.read_text() == "{}"


class _MismatchWorker:
    """A stand-in worker: every case a mismatch of one signature, at once; `interrupt_first_check` makes the
    first self-check end as a signal would."""

    restarts, profile, checks, interrupt_first_check = 0, None, [], False

    def __init__(self, device, impl, log=None, **kw):
        self.impl = impl

    def judge(self, case, *, timeout, **kw):
        return Verdict("mismatch", self.impl, "mismatch|stand-in", "3 of 4 delta elements exceed the bound")

    def selfcheck(self, timeout):
        type(self).checks.append(timeout)
        if self.interrupt_first_check and len(self.checks) == 1:
            raise lifecycle.Interrupted(signal.SIGTERM)
        return None  # our kernels pass here

    def close(self):
        pass

    kill = close


def _resumed_to_the_end(cfg: CampaignConfig) -> dict:
    from moe_lora_fuzz.fuzz.campaign.runner import run_campaign

    resumed = run_campaign(CampaignConfig(**{**vars(cfg), "resume": True, "handle_signals": False}))
    assert not resumed.interrupted
    report = json.loads(cfg.report_path.read_text())
    assert report["cases"] == cfg.max_cases and report["kinds"] == {"mismatch": cfg.max_cases}, report
    assert [(f["case_index"], f["count"]) for f in report["findings"]] == [(0, cfg.max_cases)]
    assert all(Path(f["repro"]).is_file() for f in report["findings"])
    return report


def test_signal_during_the_first_findings_self_check_leaves_its_case_to_resume(tmp_path, monkeypatch):
    """The first failing verdict runs the self-check before the finding is believed (seconds on the CPU). Before,
    the case was counted first: SIGTERM during the self-check left report.json with the case counted (cases 1,
    kinds {'mismatch': 1}, next_index 1) and no finding, and --resume started after it, so the finding was lost
    (seen under load in test_sigterm_then_resume). Now the case is counted after the self-check: resumed, it is
    judged again and recorded."""
    from moe_lora_fuzz.fuzz.campaign import runner

    worker = type("Interrupting", (_MismatchWorker,), {"checks": [], "interrupt_first_check": True})
    monkeypatch.setattr(runner, "Worker", worker)
    cfg = CampaignConfig(device="cpu", max_cases=3, out=tmp_path, quiet=True, triage_share=0.0, precompile=0)
    assert runner.run_campaign(cfg).interrupted == "SIGTERM"
    report = json.loads(cfg.report_path.read_text())
    assert (report["cases"], report["next_index"], report["findings"]) == (0, None, []), report  # none counted
    _resumed_to_the_end(cfg)
    assert len(worker.checks) == 2


def test_signal_while_a_finding_is_recorded_waits_until_it_is(tmp_path, monkeypatch):
    """A real SIGTERM sent while the first finding's repro file is being saved: the case is counted and its
    finding recorded before the campaign stops (lifecycle.uninterrupted); before, the Interrupted left the case
    counted and its finding nowhere, and --resume went on after it."""
    from moe_lora_fuzz.fuzz.campaign import casework, runner

    real_save = casework.save

    def save_under_a_signal(repro, path):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)  # the campaign's handler, not death
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here
        real_save(repro, path)

    monkeypatch.setattr(runner, "Worker", type("Plain", (_MismatchWorker,), {"checks": []}))
    monkeypatch.setattr(casework, "save", save_under_a_signal)
    cfg = CampaignConfig(
        device="cpu", max_cases=3, out=tmp_path, quiet=True, triage_share=0.0, precompile=0, budget=1e9,
        handle_signals=True,
    )  # fmt: skip
    assert runner.run_campaign(cfg).interrupted == "SIGTERM"
    report = json.loads(cfg.report_path.read_text())
    assert (report["cases"], report["next_index"]) == (1, 1), report
    assert [(f["case_index"], f["count"]) for f in report["findings"]] == [(0, 1)]
    monkeypatch.setattr(casework, "save", real_save)
    _resumed_to_the_end(cfg)


# ---- a full disk --------------------------------------------------------------------------------------------
def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def _full_disk_checks(out: Path, proc) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "No space left on device" in lines[0] and "saved:" in lines[0], lines[0]
    counts = audit(out, proc.stderr)
    assert counts["lost"] == 0 and counts["hidden"] == 0 and counts["tracebacks"] == 0, counts
    assert counts["unsaved_printed"] + counts["on_disk"] >= 1, counts
    assert not list(out.glob(".*.json.*")), "a temporary file was left behind"


def test_full_disk_is_one_error_line_and_no_finding_only_in_memory(tmp_path):
    """A real 24 KB filesystem (tmpfs, where mounting is permitted) or, elsewhere, the same campaign with every
    write past the first 24 KB refused with ENOSPC (a sitecustomize in the worker's and the CLI's path)."""
    out = tmp_path / "disk"
    mounted = os.environ.get("FAULTS_NO_MOUNT") != "1" and _tmpfs(out, "24k")
    try:
        env = _env()
        if not mounted:
            shim = tmp_path / "shim"
            shim.mkdir()
            (shim / "sitecustomize.py").write_text(ENOSPC_SHIM)
            env["PYTHONPATH"] = f"{shim}{os.pathsep}{ROOT}"
        proc = subprocess.run(
            _args(out / "out", cases=40), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        _full_disk_checks(out / "out", proc)
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], capture_output=True)


# refuses writes into .../disk/ beyond 24 KB in all, as a full filesystem would (every output of the harness is
# written through os.fdopen by fuzz.records.repro.write_atomic)
ENOSPC_SHIM = """
import errno, os
_used = [0]
_fdopen = os.fdopen

class _Full:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        if _used[0] + len(data) > 24 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _used[0] += len(data)
        return self._f.write(data)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self._f, name)

def fdopen(fd, *args, **kwargs):
    f = _fdopen(fd, *args, **kwargs)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    return _Full(f) if "/disk/" in target else f

os.fdopen = fdopen
"""


# ---- two writers, hostile directories ------------------------------------------------------------------------
def test_second_writer_exits_2_naming_the_first(tmp_path):
    out = tmp_path / "out"
    first = _start(out, budget=60, cases=1000)
    try:
        deadline = time.monotonic() + 60
        while not (out / "report.json.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = _run(out, "--resume")
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert second.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), second.stderr
        assert f"pid {first.pid}" in lines[0] and "another campaign is writing report.json" in lines[0]
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    assert not (out / "report.json.lock").exists()


def test_stale_lock_is_taken_over_and_said(tmp_path):
    out = tmp_path
    lock = outdir.Lock(out / "report.json", "dead-campaign")
    (out / "report.json.lock").write_text(json.dumps({"pid": 999999, "host": "h", "campaign": "dead-campaign"}))
    with lock:  # no live process holds the flock: stale
        assert "stale lock of pid 999999 on host h" in lock.taken_over
        with pytest.raises(outdir.LockError, match=f"pid {os.getpid()} on host .*, campaign dead-campaign"):
            with outdir.Lock(out / "report.json", "c2"):
                pass
    assert not (out / "report.json.lock").exists()


def _hostile_reports() -> dict:
    good_finding = {"signature": "s", "kind": "mismatch", "count": 1, "repro": "repro-x.json", "message": "m"}
    base = {"impl": "ours", "device": "cpu", "seed": 0, "shard": [0, 1], "cases": 1, "kinds": {"pass": 1},
            "findings": [], "coverage": {}, "elapsed_s": 1.0}  # fmt: skip
    bad = {
        "not-json": "{",
        "a-list": "[]",
        "null": "null",
        "deep": "[" * 200000 + "]" * 200000,
        "deep-object": '{"cases": ' + "[" * 100000 + "]" * 100000 + "}",
        "binary": b"\xff\xfe\x00junk",
    }
    mutations = {
        "cases-str": {"cases": "many"},
        "cases-negative": {"cases": -3},
        "cases-bool": {"cases": True},
        "kinds-list": {"kinds": []},
        "kinds-count-str": {"kinds": {"pass": "1"}},
        "findings-dict": {"findings": {}},
        "finding-null": {"findings": [None]},
        "finding-str": {"findings": ["x"]},
        "finding-no-sig": {"findings": [{k: v for k, v in good_finding.items() if k != "signature"}]},
        "finding-count-zero": {"findings": [dict(good_finding, count=0)]},
        "finding-repro-int": {"findings": [dict(good_finding, repro=3)]},
        "finding-triage-list": {"findings": [dict(good_finding, triage=[])]},
        "finding-triage-empty": {"findings": [dict(good_finding, triage={})]},
        "finding-deep-message": {"findings": [dict(good_finding, message={"a": {"b": {}}})]},
        "coverage-list": {"coverage": []},
        "coverage-edges-str": {"coverage": {"edges": {"k_tail": "2"}}},
        "phases-bad": {"phases": {"x": 3}},
        "shard-bad": {"shard": [0]},
        "elapsed-str": {"elapsed_s": "1"},
        "next-index-negative": {"next_index": -1},
        "resumed-ints": {"resumed": [1, 2]},
        "notes-dict": {"notes": {}},
        "escape-codes": {"coverage": {"knobs": {"\x1b[2J\x1b[31mowned": 5}}},  # the name is in the message
    }
    for name, change in mutations.items():
        bad[name] = json.dumps({**base, **change})
    return bad


def test_hostile_report_directories_one_line_exit_2_nothing_written(tmp_path, capsys):
    """merge, triage and --resume on each damaged report: exit 2, one `error:` line (escaped), no traceback,
    nothing written (merge's --out is not even created)."""
    figures = {"inputs": 0, "exit_2_one_line": 0}
    for name, text in _hostile_reports().items():
        d = tmp_path / name
        d.mkdir()
        (d / "report.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        before = sorted(p.name for p in d.iterdir())
        for argv in (
            ["merge", str(d), "--out", str(tmp_path / f"{name}-merged")],
            ["triage", str(d), "--device", "cpu"],
            ["run", "--device", "cpu", "--impl", "ours", "--budget", "30", "--resume", "--out", str(d)],
        ):
            figures["inputs"] += 1
            with pytest.raises(SystemExit) as stop:
                main(argv)
            err = capsys.readouterr().err
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert stop.value.code == 2, (name, argv[0], err)
            assert len(lines) == 1 and lines[0].startswith("error:"), (name, argv[0], err)
            assert "\x1b" not in err and "Traceback" not in err, (name, argv[0], err)
            figures["exit_2_one_line"] += 1
        assert not (tmp_path / f"{name}-merged").exists(), name
        assert sorted(p.name for p in d.iterdir()) == before, name  # no lock, log or copy left behind
    assert figures["inputs"] == figures["exit_2_one_line"] == 3 * len(_hostile_reports())


def test_merge_copies_regular_files_only(tmp_path):
    """A shard directory holding a symlink to a secret, a FIFO and a device link: none of them is read or copied;
    a repro file no report lists is still counted."""
    d = tmp_path / "shard"
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"impl": "ours", "cases": 0, "kinds": {}, "findings": [],
                                               "coverage": {}, "elapsed_s": 1.0}))  # fmt: skip
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET")
    secret.chmod(0o600)
    (d / "repro-secret.json").symlink_to(secret)
    (d / "repro-zero.json").symlink_to("/dev/zero")
    os.mkfifo(d / "repro-fifo.json")
    out = tmp_path / "merged"
    from moe_lora_fuzz.fuzz.campaign.merge import merge_reports

    merged = merge_reports([d], out)
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert len(merged["skipped"]) == 3 and merged["findings"] == []
    # a real repro file the report does not list: counted
    src = ROOT / "tests" / "data" / "repro-v1.json"
    (d / "repro-unlisted.json").write_bytes(src.read_bytes())
    merged = merge_reports([d], tmp_path / "merged2")
    assert merged["distinct_findings"] == 1 and (tmp_path / "merged2" / "repro-unlisted.json").is_file()


@pytest.mark.slow
def test_many_faults(tmp_path, reference):
    """FAULT_RUNS campaigns (default 12), each hit by kill -9 or SIGTERM at a random moment from startup to
    shutdown, then resumed; prints the figures."""
    rng = random.Random(int(os.environ.get("FAULT_SEED", "0")))
    runs = int(os.environ.get("FAULT_RUNS", "12"))
    totals = {"runs": 0, "kill9": 0, "sigterm": 0, "on_disk": 0, "reported": 0, "recovered": 0, "lost": 0,
              "hidden": 0, "tracebacks": 0}  # fmt: skip
    for i in range(runs):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
        out = tmp_path / f"run{i}"
        faulted = _fault_then_resume(out, rng.uniform(0.5, 20.0), sig)
        _check_against(out, reference, faulted)
        totals["runs"] += 1
        totals["kill9" if sig == signal.SIGKILL else "sigterm"] += 1
        for k in ("on_disk", "reported", "recovered", "lost", "hidden", "tracebacks"):
            totals[k] += faulted["first"].get(k, 0)
    print(f"\nFAULT FIGURES: {json.dumps(totals)}")
    assert totals["lost"] == totals["hidden"] == totals["tracebacks"] == 0


def test_text_from_files_is_printed_escaped(tmp_path, capsys):
    """Terminal escape codes and bidirectional overrides in a report (here a settled finding's trigger, which
    `triage` prints without re-running anything) reach the terminal escaped."""
    evil = "\x1b]0;owned\x07\x1b[2J\u202egnp.exe"
    info = {"key": "k", "via": "minimised (3 runs)", "kind": "mismatch", "family": "wrong", "failure": "",
            "trigger": evil, "minimal_repro": "m.json", "essential": {}, "disappears_with": [],
            "minimal_case": ""}  # fmt: skip
    finding = {"signature": "s", "kind": "mismatch", "count": 1, "repro": "r.json", "message": evil, "triage": info}
    (tmp_path / "report.json").write_text(
        json.dumps({"impl": "ours", "device": "cpu", "cases": 1, "kinds": {"mismatch": 1}, "findings": [finding]})
    )
    assert main(["triage", str(tmp_path), "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u202egnp.exe" in out and "\x1b" not in out and "\u202e" not in out
