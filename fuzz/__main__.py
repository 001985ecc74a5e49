"""CLI: python -m fuzz {run,list,replay,minimize,triage,export}. Exit 0 clean, 1 findings/failing, 2 usage or env."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _device(name: str) -> str:
    """Resolve --device and prepare the environment before anything imports triton."""
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA device is available here")
    if name == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    elif os.environ.get("TRITON_INTERPRET") == "1":
        _fail("--device cuda: TRITON_INTERPRET=1 is set; unset it to compile for the GPU")
    return name


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="a time-budgeted campaign")
    r.add_argument("--impl", default="ours", help="ours | mutant:<id> | module:function | file.py:function")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--budget", type=float, default=120.0, help="seconds (default 120)")
    r.add_argument("--max-cases", type=int, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, default=Path("fuzz-out"))
    r.add_argument("--profile", default="premerge", choices=("premerge", "nightly"))
    r.add_argument("--shard", default="0/1", help="i/n: run the i-th of n disjoint parts of the case stream")
    r.add_argument("--sanitize-every", type=int, default=0, metavar="N",
                   help="GPU: also replay every Nth case and every new finding under compute-sanitizer")
    r.add_argument("--triage-share", type=float, default=None, metavar="F",  # triage (fuzz.triage)
                   help="most of the budget spent minimising findings (default 0.2; 0 turns triage off)")
    r.add_argument("--triage-cap", type=float, default=None, metavar="SECONDS",
                   help="most seconds of triage per finding (default 30 on cpu, 20 on cuda)")
    sub.add_parser("list", help="list implementation names")
    rp = sub.add_parser("replay", help="re-run a repro file")
    rp.add_argument("file", type=Path)
    rp.add_argument("--impl", default=None, help="override the file's implementation")
    rp.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    rp.add_argument("--sanitize", action="store_true",
                    help="run under compute-sanitizer memcheck (GPU), with --no-guards")
    rp.add_argument("--no-guards", action="store_true",
                    help="give the implementation exact-size buffers instead of views into guard bands (a guard "
                         "band absorbs an out-of-bounds access that compute-sanitizer would otherwise report)")
    mn = sub.add_parser("minimize", help="reduce a repro's case while it fails the same way")
    mn.add_argument("file", type=Path)
    mn.add_argument("--out", type=Path, required=True)
    mn.add_argument("--budget", type=float, default=60.0)
    mn.add_argument("--impl", default=None)
    mn.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    tr = sub.add_parser("triage", help="group the findings of finished campaigns into root causes")
    tr.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    tr.add_argument("--out", type=Path, default=None, help="write the root causes here instead of into each report")
    tr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where findings not yet triaged are re-run (default: cuda when present)")
    tr.add_argument("--cap", type=float, default=None,
                    help="seconds per finding not yet triaged (default 30 on cpu, 20 on cuda)")
    ex = sub.add_parser("export", help="write a standalone pytest regression test")
    ex.add_argument("file", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    return p


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        _fail(f"--shard {text!r}: expected i/n, e.g. 0/2")
    if not (n >= 1 and 0 <= i < n):
        _fail(f"--shard {text!r}: needs n >= 1 and 0 <= i < n")
    return i, n


def cmd_run(a) -> int:
    if a.budget <= 0:
        _fail("--budget: must be > 0 seconds")
    if a.max_cases is not None and a.max_cases < 1:
        _fail("--max-cases: must be >= 1")
    if a.seed < 0:
        _fail("--seed: must be >= 0")
    shard = _shard(a.shard)
    if a.sanitize_every < 0:
        _fail("--sanitize-every: must be >= 0")
    if a.out.exists() and not a.out.is_dir():
        _fail(f"--out {a.out}: exists and is not a directory")
    if a.triage_share is not None and not 0 <= a.triage_share <= 1:
        _fail("--triage-share: must lie in [0, 1]")
    if a.triage_cap is not None and a.triage_cap <= 0:
        _fail("--triage-cap: must be > 0 seconds")
    device = _device(a.device)
    if a.sanitize_every and device != "cuda":
        _fail("--sanitize-every: needs --device cuda (compute-sanitizer checks GPU memory accesses)")
    from .runner import CampaignConfig, run_campaign
    cfg = CampaignConfig(impl=a.impl, device=device, budget=a.budget, max_cases=a.max_cases, seed=a.seed,
                         out=a.out, profile=a.profile, shard=shard, sanitize_every=a.sanitize_every,
                         triage_share=a.triage_share, triage_cap=a.triage_cap)
    _check_impl(a.impl)
    report = run_campaign(cfg)
    print(f"{report.cases} cases, {len(report.findings)} distinct findings, {len(report.root_causes)} root causes; "
          f"report: {a.out / 'report.json'}")
    _print_root_causes(report.root_causes)
    return 1 if report.findings else 0


def _print_root_causes(causes: list) -> None:
    for rc in causes:
        print(f"  {rc['kind']:<18} x{len(rc['findings']):<3} {rc['trigger']}\n{'':23}minimal: {rc['minimal_repro']}")


def cmd_triage(a) -> int:
    import json

    from .repro import write_atomic
    from .triage import TriageError, triage_dirs
    if a.cap is not None and a.cap <= 0:
        _fail("--cap: must be > 0 seconds")
    device = _device(a.device)
    try:
        reports, causes = triage_dirs(a.dirs, device=device, cap=a.cap,
                                      progress=lambda s: print(s, file=sys.stderr, flush=True))
    except TriageError as e:
        _fail(str(e))
    if a.out:
        write_atomic(a.out, json.dumps({"reports": [str(d) for d in a.dirs], "root_causes": causes}, indent=2) + "\n")
    else:
        for d, report in zip(a.dirs, reports, strict=True):
            report["root_causes"] = causes
            write_atomic(d / "report.json", json.dumps(report, indent=2) + "\n")
    n = sum(len(r["findings"]) for r in reports)
    print(f"{n} findings in {len(reports)} reports, {len(causes)} root causes; written to "
          f"{a.out or ', '.join(str(d / 'report.json') for d in a.dirs)}")
    _print_root_causes(causes)
    return 1 if causes else 0


def _check_impl(name: str) -> None:
    from .impls import ImplError, resolve
    try:
        resolve(name)
    except ImplError as e:
        _fail(str(e))


def _load(path: Path):
    from .repro import ReproError, load
    try:
        return load(path)
    except ReproError as e:
        _fail(str(e))


def _replay_target(a):
    """The repro, device and implementation of a replay/minimise command, refused early if unusable."""
    repro = _load(a.file)
    device = _device(a.device or repro.device)
    impl = a.impl or repro.impl
    try:
        repro.case.validate(interpreter=device == "cpu")
    except ValueError as e:
        _fail(f"{a.file}: cannot run on {device}: {e}")
    _check_impl(impl)
    return repro, device, impl


def cmd_replay(a) -> int:
    repro, device, impl = _replay_target(a)
    if a.sanitize:
        return _sanitized(a, device, impl)
    from .runner import CASE_TIMEOUT_S, Worker, WorkerDied
    try:
        w = Worker(device, impl)
        vd = w.run(repro.case, True, CASE_TIMEOUT_S[device], guards=not a.no_guards)
        w.close()
    except WorkerDied as e:
        print(f"crash: {e}")
        return 1
    print(f"{vd['kind']}: {vd['message']}" if vd["kind"] != "pass" else "pass")
    if vd["kind"] != "pass":
        print(f"signature: {vd['signature']} (recorded: {repro.verdict.signature})")
        for w_ in vd["worst"][:5]:
            print(f"  {w_}")
    return 1 if vd["kind"] != "pass" else 0


def _sanitized(a, device: str, impl: str) -> int:
    import shutil
    import subprocess
    if device != "cuda":
        _fail("--sanitize: needs --device cuda (compute-sanitizer checks GPU memory accesses)")
    tool = shutil.which("compute-sanitizer")
    if not tool:
        _fail("--sanitize: compute-sanitizer not found on PATH")
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-m", "fuzz", "replay",
           str(a.file), "--impl", impl, "--device", "cuda", "--no-guards"]
    rc = subprocess.run(cmd, env=env).returncode
    # memcheck exits 3 on its own errors, else with the replay's code (1: the oracle still flags the case)
    print("compute-sanitizer memcheck: " + ("errors reported" if rc == 3 else "clean" if rc == 0 else
                                            f"no memory errors; the replay itself exits {rc}"))
    return 0 if rc == 0 else 1


def cmd_minimize(a) -> int:
    """Minimise what the case does now with --impl (judged again: the file may be edited, the implementation
    another one), keeping the failure's kind family and, for exceptions and crashes, its detail."""
    repro, device, impl = _replay_target(a)
    from .minimize import describe
    from .oracle import Verdict, family
    from .repro import Repro, save
    from .runner import Worker
    from .triage import WorkerJudge, triage_case
    judge = WorkerJudge(Worker(device, impl), device, impl, metamorphic=repro.verdict.kind == "metamorphic")
    try:
        target = judge(repro.case)
        if target["kind"] == "pass":
            _fail(f"{a.file}: the case passes with --impl {impl} on {device}; nothing to minimise")
        if target["signature"] != repro.verdict.signature:
            print(f"note: recorded {repro.verdict.signature or 'pass'}; now {target['signature']}: minimising that",
                  file=sys.stderr)
        print(f"minimising {describe(repro.case)}", file=sys.stderr)
        tri = triage_case(repro.case, judge, target, budget=a.budget, interpreter=device == "cpu",
                          progress=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        judge.worker.close()
    if tri is None:
        _fail(f"{a.file}: the case did not fail the same way when judged twice (flaky); nothing to minimise")
    save(Repro(tri.minimal, impl, device, Verdict(**tri.verdict), repro.environment), a.out)
    same = f"kind family {family(target['kind'])}" + (f", failure {target['failure']}" if target.get("failure") else "")
    print(f"minimal case after {tri.tries} tries, {tri.seconds:.1f}s"
          f"{'' if tri.one_minimal else ' (budget ran out: not proven 1-minimal)'}:\n  {describe(tri.minimal)}\n"
          f"  kept: {same} ({tri.verdict['kind']} now)\n"
          f"  dropped from the old signature: {'; '.join(tri.dropped) or 'nothing'}\n"
          f"  trigger: {tri.trigger()}\nwritten to {a.out}")
    return 0


def cmd_export(a) -> int:
    repro = _load(a.file)
    from .export import export_test
    name = a.out.stem.removeprefix("test_")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(export_test(repro, name))
    print(f"wrote {a.out}")
    return 0


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if a.cmd == "list":
        from .impls import names
        print("\n".join(names() + ["module:function", "path/to/file.py:function"]))
        return 0
    return {"run": cmd_run, "replay": cmd_replay, "minimize": cmd_minimize, "export": cmd_export,
            "triage": cmd_triage}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
