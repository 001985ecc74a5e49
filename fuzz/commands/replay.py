"""`moe-lora-fuzz replay` (one repro file, or many), `minimize`, `triage` and `export`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from moe_lora_fuzz.fuzz.commands.common import (
    _abs_path,
    _check_builtin_impl,
    _device,
    _fail,
    _impl_name,
    _positive,
    _progress_line,
    _worker,
    _writable_file,
)
from moe_lora_fuzz.fuzz.commands.run import _print_root_causes


# ---- replay ------------------------------------------------------------------------------------------------
def add_target_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """What replay and minimise share: the file, the implementation, the device and the limits."""
    if many:  # replay: one file as before, or many files / directories (fuzz.campaign.corpus)
        p.add_argument("file", type=_abs_path, nargs="+", help="repro files (JSON) or directories holding them")
    else:
        p.add_argument("file", type=_abs_path, help="a repro file (JSON) written by a campaign")
    p.add_argument(
        "--impl",
        type=_impl_name,
        default=None,
        help="implementation to run; needed when the file names an external one (a file never chooses code to import)",
    )
    p.add_argument(
        "--device", default=None, choices=("auto", "cpu", "cuda"), help="device to run on (default: the file's)"
    )
    p.add_argument(
        "--case-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds before the case is a `hang` (None: the file's, else 300 on cpu, 120 on cuda)",
    )
    p.add_argument(
        "--allow-large",
        action="store_true",
        help="run cases above the replay size limit (fuzz.records.repro.MAX_CASE_ELEMENTS tensor elements)",
    )


def add_replay_args(rp: argparse.ArgumentParser) -> None:
    add_target_args(rp, many=True)
    rp.add_argument(
        "--sanitize", action="store_true", help="run under compute-sanitizer memcheck (GPU), with --no-guards"
    )
    rp.add_argument(
        "--no-guards",
        action="store_true",
        help="give the implementation exact-size buffers instead of views into guard bands (a guard "
        "band absorbs an out-of-bounds access that compute-sanitizer would otherwise report)",
    )


def _load(path: Path, allow_large: bool = False):
    from moe_lora_fuzz.fuzz.records.repro import ReproError, check_size, load

    try:
        repro = load(path)
        if not allow_large:
            check_size(repro.case)
    except ReproError as e:
        _fail(str(e) if str(e).startswith(str(path)) else f"{path}: {e}")
    return repro


@dataclass(frozen=True)
class Target:
    repro: object
    device: str
    impl: str
    timeout: float


def _replay_target(a) -> Target:
    """The repro, device, implementation and timeout of a replay/minimise command, refused early if unusable."""
    from moe_lora_fuzz.fuzz.records.repro import BUILTIN_IMPLS, is_builtin  # imports nothing of Triton's

    if a.case_timeout is not None:
        _positive("--case-timeout", a.case_timeout)
    repro = _load(a.file, a.allow_large)
    if a.impl is None and not is_builtin(repro.impl):
        _fail(
            f"{a.file}: names the external implementation {repro.impl!r}, and a file never chooses code to "
            f"run; pass --impl (e.g. --impl {repro.impl}) if you trust it, or one of {BUILTIN_IMPLS}"
        )
    impl = a.impl or repro.impl
    device = _device(a.device or repro.device)  # before anything imports triton.language
    from moe_lora_fuzz.fuzz.execution.worker import CASE_TIMEOUT_S

    try:
        repro.case.validate(interpreter=device == "cpu")
    except ValueError as e:
        _fail(f"{a.file}: cannot run on {device}: {e}")
    _check_builtin_impl(impl)
    return Target(repro, device, impl, a.case_timeout or repro.case_timeout_s or CASE_TIMEOUT_S[device])


def cmd_replay(a) -> int:
    if len(a.file) > 1 or a.file[0].is_dir():
        return _replay_many(a)
    a.file = a.file[0]
    t = _replay_target(a)
    if a.sanitize:
        return _sanitized(a, t)
    w = _worker(t.device, t.impl)
    v = w.judge(t.repro.case, timeout=t.timeout, metamorphic=True, guards=not a.no_guards)
    w.close()
    from moe_lora_fuzz.fuzz.escape import (
        printable,  # the recorded verdict comes from the file; the message from the code run
    )

    print(f"{v.kind}: {printable(v.message)}" if v.failed else "pass")
    if v.failed:
        print(f"signature: {printable(v.signature)} (recorded: {printable(t.repro.verdict.signature)})")
        for w_ in v.worst[:5]:
            print(f"  {printable(w_)}")
    return 1 if v.failed else 0


def _replay_many(a) -> int:
    """replay DIR / replay A B C: every repro file, one line each; exit 1 when any still fails."""
    from moe_lora_fuzz.fuzz.campaign.corpus import CorpusError, replay_many

    if a.sanitize or a.no_guards:
        _fail("--sanitize/--no-guards: replay one file at a time")
    if a.case_timeout is not None:
        _positive("--case-timeout", a.case_timeout)
    device = _device(a.device or "auto")
    if a.impl:
        _check_builtin_impl(a.impl)
    try:
        rows, code = replay_many(a.file, a.impl, device, a.case_timeout)
    except CorpusError as e:
        _fail(str(e))
    for r in rows:
        state = f"still fails ({r['now']})" if r["failed"] else "passes"
        print(f"{state:<28} recorded {r['recorded']:<14} {r['repro']}")
    print(f"{sum(r['failed'] for r in rows)} of {len(rows)} repro files still fail")
    return code


def _sanitized(a, t: Target) -> int:
    import shutil
    import subprocess

    if t.device != "cuda":
        _fail("--sanitize: needs --device cuda (compute-sanitizer checks GPU memory accesses)")
    tool = shutil.which("compute-sanitizer")
    if not tool:
        _fail("--sanitize: compute-sanitizer not found on PATH")
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    cmd = [
        tool,
        "--tool",
        "memcheck",
        "--error-exitcode",
        "3",
        sys.executable,
        "-m",
        "moe_lora_fuzz.fuzz.cli",
        "replay",
        str(a.file),
        "--impl",
        t.impl,
        "--device",
        "cuda",
        "--no-guards",
        "--case-timeout",
        str(t.timeout),
    ]
    rc = subprocess.run(cmd, env=env).returncode
    # memcheck exits 3 on its own errors, else with the replay's code (1: the oracle still flags the case)
    print(
        "compute-sanitizer memcheck: "
        + ("errors reported" if rc == 3 else "clean" if rc == 0 else f"no memory errors; the replay itself exits {rc}")
    )
    return 0 if rc == 0 else 1


# ---- minimize ----------------------------------------------------------------------------------------------
def add_minimize_args(mn: argparse.ArgumentParser) -> None:
    add_target_args(mn)
    mn.add_argument("--out", type=_abs_path, required=True, help="where to write the minimal repro file")
    mn.add_argument("--budget", type=float, default=60.0, help="seconds for the reduction")


def cmd_minimize(a) -> int:
    """Minimise what the case does now (judged again: the file may be edited, --impl may name another
    implementation), keeping the failure's kind family and, for exceptions and crashes, its detail."""
    _positive("--budget", a.budget)
    _writable_file("--out", a.out)  # before the work, not after it
    t = _replay_target(a)
    from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, family
    from moe_lora_fuzz.fuzz.records.repro import Repro, save
    from moe_lora_fuzz.fuzz.triage.minimize import describe
    from moe_lora_fuzz.fuzz.triage.triager import WorkerJudge, triage_case

    judge = WorkerJudge(
        _worker(t.device, t.impl),
        t.device,
        t.impl,
        metamorphic=t.repro.verdict.kind == "metamorphic",
        timeout=t.timeout,
    )
    try:
        target = judge(t.repro.case)
        if target["kind"] == "pass":
            _fail(f"{a.file}: the case passes with --impl {t.impl} on {t.device}; nothing to minimise")
        if target["signature"] != t.repro.verdict.signature:
            from moe_lora_fuzz.fuzz.escape import printable

            print(
                f"note: recorded {printable(t.repro.verdict.signature or 'pass')}; now "
                f"{printable(target['signature'])}: minimising that",
                file=sys.stderr,
            )
        print(f"minimising {describe(t.repro.case)}", file=sys.stderr)
        tri = triage_case(
            t.repro.case,
            judge,
            target,
            budget=a.budget,
            interpreter=t.device == "cpu",
            progress=_progress_line,
        )
    finally:
        judge.worker.close()
    if tri is None:
        _fail(f"{a.file}: the case did not fail the same way when judged twice (flaky); nothing to minimise")
    try:
        save(
            Repro(
                tri.minimal,
                t.impl,
                t.device,
                Verdict.from_dict(tri.verdict),
                t.repro.environment,
                t.timeout,
                t.repro.campaign,
            ),
            a.out,
        )
    except OSError as e:
        _fail(f"--out {a.out}: cannot write ({e.strerror or e})")
    same = f"kind family {family(target['kind'])}" + (f", failure {target['failure']}" if target.get("failure") else "")
    print(
        f"minimal case after {tri.tries} tries, {tri.seconds:.1f}s"
        f"{'' if tri.one_minimal else ' (budget ran out: not proven 1-minimal)'}:\n  {describe(tri.minimal)}\n"
        f"  kept: {same} ({tri.verdict['kind']} now)\n"
        f"  dropped from the old signature: {'; '.join(tri.dropped) or 'nothing'}\n"
        f"  trigger: {tri.trigger()}\nwritten to {a.out}"
    )
    return 0


# ---- triage ------------------------------------------------------------------------------------------------
def add_triage_args(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("dirs", type=_abs_path, nargs="+", metavar="DIR", help="finished campaigns' --out directories")
    tr.add_argument(
        "--out", type=_abs_path, default=None, help="write the root causes to this file instead of into each report"
    )
    tr.add_argument(
        "--impl",
        type=_impl_name,
        default=None,
        help="the implementation to re-run findings with (required when a report names an external one: "
        "a file never chooses code to run)",
    )
    tr.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where findings not yet triaged are re-run"
    )
    tr.add_argument(
        "--cap", type=float, default=None, help="seconds per finding not yet triaged (default 30 on cpu, 20 on cuda)"
    )


def cmd_triage(a) -> int:
    if a.cap is not None:
        _positive("--cap", a.cap)
    device = _device(a.device)  # before anything imports triton.language
    from moe_lora_fuzz.fuzz.records.repro import dumps, write_atomic
    from moe_lora_fuzz.fuzz.triage.classify import failing, summary
    from moe_lora_fuzz.fuzz.triage.offline import TriageError, triage_dirs

    if a.out:
        _writable_file("--out", a.out)
    try:
        reports, causes = triage_dirs(a.dirs, device=device, cap=a.cap, impl=a.impl, progress=_progress_line)
    except TriageError as e:
        _fail(str(e))
    if a.out:
        write_atomic(a.out, dumps({"reports": [str(d) for d in a.dirs], "root_causes": causes}, indent=2) + "\n")
    else:
        from moe_lora_fuzz.fuzz.outputs.report_views import write_views

        for report in reports:
            report["root_causes"] = causes
            kept = {k: v for k, v in report.items() if k != "_path"}
            write_atomic(Path(report["_path"]), dumps(kept, indent=2) + "\n")
            write_views(Path(report["_path"]), kept)  # report.html / report.md follow the new root causes
    n = sum(len(r["findings"]) for r in reports)
    print(
        f"{n} findings in {len(reports)} reports, {summary(causes)}; written to "
        f"{a.out or ', '.join(r['_path'] for r in reports)}"
    )
    _print_root_causes(causes)
    return 1 if failing(causes) else 0


# ---- export ------------------------------------------------------------------------------------------------
def add_export_args(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("file", type=_abs_path, help="a repro file (JSON) written by a campaign")
    ex.add_argument("--out", type=_abs_path, required=True, help="the test file to write (test_*.py)")
    ex.add_argument("--force", action="store_true", help="replace --out if it exists")
    ex.add_argument(
        "--impl",
        type=_impl_name,
        default=None,
        help="the implementation the test runs (a file path is stored relative to the test); needed when the "
        "repro names an external one: a file never chooses code to import, at export or at test time",
    )


def cmd_export(a) -> int:
    from moe_lora_fuzz.fuzz.outputs.export import export_test
    from moe_lora_fuzz.fuzz.records.repro import BUILTIN_IMPLS, is_builtin, write_atomic

    repro = _load(a.file, allow_large=True)  # nothing runs here
    if a.impl is None and not is_builtin(repro.impl):
        _fail(
            f"{a.file}: names the external implementation {repro.impl!r}, and a file never chooses code to "
            f"import; pass --impl (e.g. --impl {repro.impl}) if you trust it, or one of {BUILTIN_IMPLS}"
        )
    if a.out.exists() and not a.force:
        _fail(f"--out {a.out}: exists; pass --force to replace it")
    _writable_file("--out", a.out)
    try:
        text = export_test(repro, a.out.stem, impl=a.impl, test_dir=a.out.parent)
    except ValueError as e:
        _fail(f"{a.file}: {e}")
    write_atomic(a.out, text)
    print(f"wrote {a.out}")
    return 0
