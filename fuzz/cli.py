"""CLI: moe-lora-fuzz (or python -m moe_lora_fuzz) {run,list,replay,minimize,triage,export,merge}.

Exit 0 clean, 1 findings (or failing), 2 usage or environment error (one `error:` line), 130/143 interrupted
by SIGINT/SIGTERM. Paths are made absolute as they are parsed. Replay and minimise run only our own code
(`ours`, `mutant:<id>`) unless --impl names another implementation on the command line.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from moe_lora_fuzz.fuzz import __version__


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions kept as written; paths (absolute defaults such as
    --out's) never broken at their hyphens when help text is wrapped."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def _fail(msg: str) -> None:
    from moe_lora_fuzz.fuzz.escape import printable  # one line, and nothing from a file acts on the terminal

    print(f"error: {printable(msg)}", file=sys.stderr)
    raise SystemExit(2)


def _device(name: str) -> str:
    """Resolve --device and prepare the environment before anything imports triton."""
    import torch
    from moe_lora_fuzz.contract import resolve_device

    name = resolve_device(name)
    if name == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA device is available here")
    if name == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        from moe_lora_fuzz.fuzz.runtime.interpreter import install as install_interpreter

        install_interpreter()  # bf16 dots/atomics and TF32 as on a GPU (fuzz/runtime/interpreter.py)
        _warn_unpatched()
    elif os.environ.get("TRITON_INTERPRET") == "1":
        _fail("--device cuda: TRITON_INTERPRET=1 is set; unset it to compile for the GPU")
    return name


def _warn_unpatched() -> None:
    """One console line at the start when the interpreter could not be patched (docs/versions.md)."""
    from moe_lora_fuzz.fuzz.escape import printable
    from moe_lora_fuzz.fuzz.runtime import interpreter

    if interpreter.NOT_PATCHED_REASON and not getattr(_warn_unpatched, "said", False):
        _warn_unpatched.said = True
        print(f"warning: Triton's interpreter {printable(interpreter.NOT_PATCHED_REASON)}", file=sys.stderr)


def _progress_line(text: str) -> None:
    """Progress of triage and minimise on stderr; it may quote report and repro files, so it is escaped."""
    from moe_lora_fuzz.fuzz.escape import printable_lines

    print(printable_lines(text), file=sys.stderr, flush=True)


def _default_out(impl: str) -> Path:
    """fuzz-out/<UTC time>-<implementation>: a new directory per run, so a second run never meets the first's."""
    import re
    import time

    target, _, func = impl.rpartition(":")
    if target.endswith(".py"):  # path/to/file.py:function (or vllm:path/to/file.py) -> file-function
        framework = target.split(":", 1)[0] + "-" if target.startswith(("vllm:", "sglang:")) else ""
        impl = f"{framework}{Path(target).stem}-{func}"
    elif impl.startswith(("vllm:", "sglang:")) and impl.endswith(".py"):
        impl = f"{impl.split(':', 1)[0]}-{Path(impl).stem}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", impl).strip("-.")[:60]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = _abs_path("fuzz-out") / f"{stamp}-{slug or 'impl'}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


# ---- argument types: paths become absolute when parsed -------------------------------------------------------
def _abs_path(text: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(text)))


def _impl_name(text: str) -> str:
    """--impl with a file.py:function made absolute, so the name stored in reports works from anywhere."""
    target, sep, func = text.rpartition(":")
    if sep and target.endswith(".py") and not text.startswith("mutant:"):
        return f"{_abs_path(target)}:{func}"
    return text


def _positive(flag: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        _fail(f"{flag}: must be > 0 seconds and finite (got {value})")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        _fail(f"--shard {text!r}: expected i/n, e.g. 0/2")
    if not (n >= 1 and 0 <= i < n):
        _fail(f"--shard {text!r}: needs n >= 1 and 0 <= i < n")
    return i, n


def _writable_dir(flag: str, path: Path, shown: Path | None = None) -> None:
    """Create the directory if needed and prove it takes a file, before any work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        _fail(f"{flag} {shown or path}: cannot write there ({e.strerror or e})")


def _writable_file(flag: str, path: Path) -> None:
    if path.is_dir():
        _fail(f"{flag} {path}: is a directory; name a file")
    _writable_dir(flag, path.parent, shown=path)


def _check_builtin_impl(name: str) -> None:
    """Check our own names here; an external implementation is imported only by the worker process, so a
    bad one (even one that calls os._exit at import) is reported, never takes the CLI down."""
    from moe_lora_fuzz.fuzz.records.repro import is_builtin
    from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve

    if is_builtin(name):
        try:
            resolve(name)
        except ImplError as e:
            _fail(str(e))


def _worker(device: str, impl: str, log: Path | None = None):
    from moe_lora_fuzz.fuzz.execution.worker import Worker
    from moe_lora_fuzz.fuzz.targets.impls import ImplError

    try:
        return Worker(device, impl, log=log)
    except ImplError as e:
        _fail(str(e))


# ---- run ---------------------------------------------------------------------------------------------------
def add_run_args(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--impl",
        type=_impl_name,
        default="ours",
        help="ours | mutant:<id> | module:function | path/to/file.py:function",
    )
    r.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="cuda, cpu (Triton interpreter) or auto (cuda when present)",
    )
    r.add_argument("--budget", type=float, default=120.0, help="seconds of wall-clock time for the campaign")
    r.add_argument(
        "--case-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds one case may take before it is a `hang` finding, whatever the budget left "
        "(None: 300 on cpu, 120 on cuda)",
    )
    r.add_argument("--max-cases", type=int, default=None, help="stop after this many cases")
    r.add_argument("--seed", type=int, default=0, help="campaign seed: case i is a pure function of (seed, i)")
    r.add_argument(
        "--out",
        type=_abs_path,
        default=None,
        help="directory for report.json, repro files and worker.log; must be empty unless --resume "
        "(None: a new fuzz-out/<UTC time>-<impl> per run)",
    )
    r.add_argument(
        "--junitxml",
        type=_abs_path,
        default=None,
        metavar="PATH",
        help="also write the result as JUnit XML (one test case per finding) for CI dashboards",
    )
    r.add_argument(
        "--resume", action="store_true", help="continue the campaign whose report is in --out, keeping every file there"
    )
    r.add_argument(
        "--profile",
        default="premerge",
        choices=("premerge", "nightly"),
        help="case sizes: premerge (small) or nightly (GPU-sized shapes on cuda)",
    )
    r.add_argument("--shard", default="0/1", help="i/n: run the i-th of n disjoint parts of the case stream")
    r.add_argument(
        "--sanitize-every",
        type=int,
        default=0,
        metavar="N",
        help="GPU: also replay every Nth case and every new finding under compute-sanitizer",
    )
    r.add_argument(
        "--triage-share",
        type=float,
        default=None,
        metavar="F",
        help="most of the budget spent minimising and grouping findings (fuzz.triage.triager; default 0.2, "
        "0 with --stop-after style runs; 0 turns triage off)",
    )
    r.add_argument(
        "--triage-cap",
        type=float,
        default=None,
        metavar="SECONDS",
        help="most seconds of triage per finding (default 30 on cpu, 20 on cuda)",
    )
    r.add_argument(
        "--precompile",
        type=int,
        default=None,
        metavar="N",
        help="helper processes that compile the kernel variants of upcoming cases ahead of the campaign "
        "(fuzz.campaign.precompile; GPU nightly profile only; default: the host's cores less 4, at most 12; 0: off)",
    )
    r.add_argument(
        "--probe-contract",
        action="store_true",
        help="draw cases just outside the implementation's declared capabilities and expect clean "
        "refusals (ValueError/TypeError/NotImplementedError before writing): verdict `refused`; "
        "anything else is an `unchecked-precondition` finding",
    )
    r.add_argument(
        "--fail-on",
        default="bug,intermittent",
        metavar="CLASSES",
        help="root-cause classes that make the exit code 1 (comma-separated, or all; fuzz.triage.classify): "
        "bug, intermittent, precision, unchecked-precondition",
    )
    r.add_argument(
        "--corpus",
        type=_abs_path,
        action="append",
        default=[],
        metavar="DIR",
        help="replay the repro files of earlier campaigns in DIR first and say which still fail (repeatable)",
    )
    r.add_argument(
        "--require-edges",
        action="store_true",
        help="exit 1 when a required edge condition (fuzz.space.coverage) was never reached",
    )


def cmd_run(a) -> int:
    _positive("--budget", a.budget)
    if a.triage_share is not None and not 0 <= a.triage_share <= 1:
        _fail(f"--triage-share: must lie in [0, 1] (got {a.triage_share})")
    if a.triage_cap is not None:
        _positive("--triage-cap", a.triage_cap)
    if a.case_timeout is not None:
        _positive("--case-timeout", a.case_timeout)
    if a.max_cases is not None and a.max_cases < 1:
        _fail("--max-cases: must be >= 1")
    if a.seed < 0:
        _fail("--seed: must be >= 0")
    if a.precompile is not None and a.precompile < 0:
        _fail("--precompile: must be >= 0")
    shard = _shard(a.shard)
    if a.out is None:
        if a.resume:
            _fail("--resume: needs --out, the directory of the campaign to continue")
        a.out = _default_out(a.impl)
    if a.junitxml is not None:
        _writable_file("--junitxml", a.junitxml)
    fail_on = _fail_on(a.fail_on)
    if a.sanitize_every < 0:
        _fail("--sanitize-every: must be >= 0")
    if a.out.exists() and not a.out.is_dir():
        _fail(f"--out {a.out}: exists and is not a directory")
    if a.out.is_dir() and any(a.out.iterdir()) and not a.resume:
        _fail(f"--out {a.out}: not empty; pass --resume to continue there, or name a new directory")
    device = _device(a.device)
    if a.sanitize_every and device != "cuda":
        _fail("--sanitize-every: needs --device cuda (compute-sanitizer checks GPU memory accesses)")
    _check_builtin_impl(a.impl)
    from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, ResumeError, run_campaign
    from moe_lora_fuzz.fuzz.judgement.selfcheck import EnvironmentBroken
    from moe_lora_fuzz.fuzz.records.outdir import LockError, OutputError
    from moe_lora_fuzz.fuzz.targets.impls import ImplError

    created = not a.out.exists()
    _writable_dir("--out", a.out)
    cfg = CampaignConfig(
        impl=a.impl,
        device=device,
        budget=a.budget,
        max_cases=a.max_cases,
        seed=a.seed,
        out=a.out,
        profile=a.profile,
        shard=shard,
        sanitize_every=a.sanitize_every,
        case_timeout=a.case_timeout,
        resume=a.resume,
        handle_signals=True,
        probe_contract=a.probe_contract,
        triage_share=a.triage_share,
        triage_cap=a.triage_cap,
        precompile=a.precompile,
        corpus=tuple(a.corpus),
    )
    try:
        report = run_campaign(cfg)
    except (ImplError, ResumeError, LockError, EnvironmentBroken, OutputError) as e:
        if created and a.out.is_dir() and not any(a.out.iterdir()):
            a.out.rmdir()  # refused before the campaign started: leave nothing behind
        _fail(str(e))
    if a.junitxml is not None and not report.interrupted:
        from moe_lora_fuzz.fuzz.outputs.junit import write_junit

        try:
            write_junit(a.junitxml, report, cfg)
        except OSError as e:
            _fail(f"--junitxml {a.junitxml}: cannot write ({e.strerror or e})")
    return _summary(a, cfg, report, fail_on)


def _fail_on(text: str) -> tuple:
    from moe_lora_fuzz.fuzz.triage.classify import parse_fail_on

    try:
        return parse_fail_on(text)
    except ValueError as e:
        _fail(f"--fail-on {text!r}: {e}")


def _summary(a, cfg, report, fail_on: tuple) -> int:
    import signal

    from moe_lora_fuzz.fuzz.triage.classify import failing, summary

    counts = f"{report.cases} cases, {len(report.findings)} distinct findings"
    if report.harness_error:  # a stand-in gap (fuzz.upstream.standins): the harness's fault, not the kernel's
        _fail(f"--impl {cfg.impl}: harness-error: {report.harness_error}; report: {cfg.report_path}")
    if report.interrupted:
        print(f"interrupted by {report.interrupted}: {counts}; report: {cfg.report_path}")
        return 128 + signal.Signals[report.interrupted].value
    if report.cases == 0:
        _fail(
            f"the campaign judged no case within --budget {a.budget:g} s (starting the worker alone takes "
            "seconds); raise --budget"
        )
    causes = f"{summary(report.root_causes)}" if report.root_causes else "0 root causes"
    print(f"{counts}, {causes}; report: {cfg.report_path}")
    _print_root_causes(report.root_causes)
    cannot = [e for e in report.coverage.missing_edges() if e in report.coverage.unreachable]
    missing = [e for e in report.coverage.missing_edges() if e not in cannot]  # what the campaign could have reached
    if missing:
        from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES

        print(
            f"WARNING: {len(missing)} of {len(REQUIRED_EDGES)} required edges never reached: {', '.join(missing)}"
            + (" (--require-edges: exit 1)" if a.require_edges else "")
        )
    if cannot:
        print(f"note: {len(cannot)} required edges this implementation cannot reach: {', '.join(cannot)}")
    return 1 if failing(report.root_causes, fail_on) or (a.require_edges and missing) else 0


def _print_root_causes(causes: list) -> None:
    from moe_lora_fuzz.fuzz.escape import printable  # root causes may come from report.json files (triage, merge)

    for rc in causes:
        kind, trigger, minimal = (printable(rc[k]) for k in ("kind", "trigger", "minimal_repro"))
        cls = printable(rc.get("class", "bug"))
        print(f"  {cls:<12} {kind:<18} x{len(rc['findings']):<3} {trigger}\n{'':36}minimal: {minimal}")


# ---- list --------------------------------------------------------------------------------------------------
def add_list_args(p: argparse.ArgumentParser) -> None:
    pass


def cmd_list(a) -> int:
    from moe_lora_fuzz.kernels import MUTANTS

    rows = [("ours", "our kernels (kernels.fused_moe_lora), the implementation that must never be flagged")]
    rows += [("ours-quant[:SCHEME]", "our quantized kernels on fp8/int8 cases only (docs/quantization.md)")]
    rows += [(f"mutant:{m}", _first_sentence(mu.doc)) for m, mu in MUTANTS.items()]
    rows += [
        (
            "vllm-fp8[:path/to/fused_moe_lora_fp8_op.py]",
            "vLLM 0.34's quantized op, vLLM's convention (quantization.md)",
        ),
        ("module:function", "an external implementation: an importable module's function"),
        ("path/to/file.py:function", "an external implementation: a function in a Python file"),
        ("sglang", "SGLang's installed fused MoE LoRA kernel, in its calling convention (docs/upstream.md)"),
        ("vllm", "vLLM's installed fused MoE LoRA kernel, in its calling convention (docs/upstream.md)"),
        (
            "sglang==VERSION",
            "a released SGLang's kernel, fetched from the package index into the cache (docs/upstream.md)",
        ),
        ("vllm==VERSION", "a released vLLM's kernel, fetched from the package index into the cache (docs/upstream.md)"),
        (
            "sglang:path/to/fused_moe_lora_kernel.py",
            "an SGLang kernel file: its folder's real modules, the rest stood in",
        ),
        ("vllm:path/to/fused_moe_lora_op.py", "a vLLM kernel file: its folder's real modules, the rest stood in"),
    ]
    width = max(len(n) for n, _ in rows)
    print("\n".join(f"{n:<{width}}  {d}" for n, d in rows))
    return 0


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + "." if dot else text


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
    from moe_lora_fuzz.fuzz.execution.worker import CASE_TIMEOUT_S
    from moe_lora_fuzz.fuzz.records.repro import BUILTIN_IMPLS, is_builtin

    if a.case_timeout is not None:
        _positive("--case-timeout", a.case_timeout)
    repro = _load(a.file, a.allow_large)
    if a.impl is None and not is_builtin(repro.impl):
        _fail(
            f"{a.file}: names the external implementation {repro.impl!r}, and a file never chooses code to "
            f"run; pass --impl (e.g. --impl {repro.impl}) if you trust it, or one of {BUILTIN_IMPLS}"
        )
    impl = a.impl or repro.impl
    device = _device(a.device or repro.device)
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
    from moe_lora_fuzz.fuzz.records.repro import dumps, write_atomic
    from moe_lora_fuzz.fuzz.triage.classify import failing, summary
    from moe_lora_fuzz.fuzz.triage.triager import TriageError, triage_dirs

    if a.cap is not None:
        _positive("--cap", a.cap)
    device = _device(a.device)
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


# ---- dispatch: a new subcommand is one entry here ----------------------------------------------------------
@dataclass(frozen=True)
class Command:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def cmd_merge(a) -> int:
    from moe_lora_fuzz.fuzz.campaign.merge import MergeError, merge_reports, summary

    try:
        merged = merge_reports(a.dirs, a.out)
    except MergeError as e:
        _fail(str(e))
    from moe_lora_fuzz.fuzz.escape import printable_lines  # the summary quotes the shards' report files

    print(printable_lines(summary(merged, a.out)))
    return 1 if merged["findings"] else 0


def add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", type=_abs_path, nargs="+", metavar="DIR", help="shard output directories (any hosts)")
    p.add_argument("--out", type=_abs_path, required=True, help="directory for the merged report.json and repros")


COMMANDS: dict[str, Command] = {
    "run": Command("a time-budgeted campaign", add_run_args, cmd_run),
    "list": Command("list implementation names, each mutant with its description", add_list_args, cmd_list),
    "replay": Command("re-run a repro file", add_replay_args, cmd_replay),
    "minimize": Command("reduce a repro's case while it fails the same way", add_minimize_args, cmd_minimize),
    "export": Command("write a standalone pytest regression test", add_export_args, cmd_export),
    "triage": Command("group the findings of finished campaigns into root causes", add_triage_args, cmd_triage),
    "merge": Command("merge shard campaigns' output directories (any hosts) into one", add_merge_args, cmd_merge),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-lora-fuzz", description=__doc__, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        c.add_args(sub.add_parser(name, help=c.help, description=c.help, formatter_class=_Formatter))
    return p


def main(argv=None) -> int:
    from moe_lora_fuzz.fuzz.records.repro import PrintableStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(sys.stdout), PrintableStream(sys.stderr)  # text from files, escaped
    try:
        a = _parser().parse_args(argv)
        return COMMANDS[a.cmd].run(a)
    except KeyboardInterrupt:  # outside a campaign (which handles its own): no traceback
        print("interrupted by SIGINT", file=sys.stderr)
        return 130
    finally:
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
