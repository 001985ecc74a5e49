"""CLI: python -m fuzz {run,list,replay,minimize,export}. Exit 0 clean, 1 findings/failing, 2 usage or env."""

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
    ex = sub.add_parser("export", help="write a standalone pytest regression test")
    ex.add_argument("file", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    mg = sub.add_parser("merge", help="merge shard campaigns' output directories (any hosts) into one")
    mg.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    mg.add_argument("--out", type=Path, required=True)
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
    device = _device(a.device)
    if a.sanitize_every and device != "cuda":
        _fail("--sanitize-every: needs --device cuda (compute-sanitizer checks GPU memory accesses)")
    from .runner import CampaignConfig, run_campaign
    cfg = CampaignConfig(impl=a.impl, device=device, budget=a.budget, max_cases=a.max_cases, seed=a.seed,
                         out=a.out, profile=a.profile, shard=shard, sanitize_every=a.sanitize_every)
    _check_impl(a.impl)
    report = run_campaign(cfg)
    print(f"{report.cases} cases, {len(report.findings)} distinct findings; report: {a.out / 'report.json'}")
    for f in report.findings.values():
        print(f"  {f['kind']:<18} x{f['count']:<4} {f['repro']}")
    return 1 if report.findings else 0


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
    repro, device, impl = _replay_target(a)
    from .minimize import describe, minimize
    from .oracle import Verdict
    from .repro import Repro, save
    from .runner import CASE_TIMEOUT_S, Worker, WorkerDied, crash_verdict
    target = repro.verdict.signature
    if not target:
        _fail(f"{a.file}: the recorded verdict passed; nothing to minimise")
    state = {"w": Worker(device, impl), "last": None}

    def still_fails(case) -> bool:
        try:
            vd = state["w"].run(case, False, CASE_TIMEOUT_S[device])
        except WorkerDied as e:
            state["w"].close()
            state["w"] = Worker(device, impl)
            vd = crash_verdict(impl, case, str(e))
        ok = vd["signature"] == target  # same kind, implementation and coarse class of case
        if ok:
            state["last"] = vd
        return ok

    print(f"minimising {describe(repro.case)}", file=sys.stderr)
    if not still_fails(repro.case):
        state["w"].close()
        _fail(f"{a.file}: the case no longer fails with signature {target}; nothing to minimise")
    res = minimize(repro.case, still_fails, budget=a.budget, interpreter=device == "cpu",
                   progress=lambda s: print(s, file=sys.stderr, flush=True))
    state["w"].close()
    save(Repro(res.case, impl, device, Verdict(**state["last"]), repro.environment), a.out)
    print(f"minimal case after {res.steps} reductions, {res.tries} tries, {res.seconds:.1f}s"
          f"{'' if res.one_minimal else ' (budget ran out: not proven 1-minimal)'}:\n  {describe(res.case)}\n"
          f"written to {a.out}")
    return 0


def cmd_export(a) -> int:
    repro = _load(a.file)
    from .export import export_test
    name = a.out.stem.removeprefix("test_")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(export_test(repro, name))
    print(f"wrote {a.out}")
    return 0


def cmd_merge(a) -> int:
    from .merge import MergeError, merge_reports, summary
    try:
        merged = merge_reports(a.dirs, a.out)
    except MergeError as e:
        _fail(str(e))
    print(summary(merged, a.out))
    return 1 if merged["findings"] else 0


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if a.cmd == "list":
        from .impls import names
        print("\n".join(names() + ["module:function", "path/to/file.py:function"]))
        return 0
    return {"run": cmd_run, "replay": cmd_replay, "minimize": cmd_minimize, "export": cmd_export,
            "merge": cmd_merge}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
