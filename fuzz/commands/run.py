"""`moe-lora-fuzz run` (a time-budgeted campaign, its summary and exit code) and `moe-lora-fuzz list`."""

from __future__ import annotations

import argparse

from moe_lora_fuzz.fuzz.commands.common import (
    _abs_path,
    _check_builtin_impl,
    _default_out,
    _device,
    _fail,
    _impl_name,
    _positive,
    _shard,
    _writable_dir,
    _writable_file,
)


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
        "--variant-draw",
        default="auto",
        choices=("auto", "on", "off"),
        help="draw most cases inside Triton kernel variants already compiled and a stated share (20%%) in new "
        "ones, compiling those ahead (fuzz.campaign.variant_draw, docs/variants.md); auto: on with cuda, except for "
        "our own kernels (their compile classes keep variants few)",
    )
    r.add_argument(
        "--new-variant-share",
        type=float,
        default=None,
        metavar="F",
        help="with --variant-draw: the share of cases drawn in variants predicted new (default 0.2)",
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
    if a.new_variant_share is not None and not 0 <= a.new_variant_share <= 1:
        _fail(f"--new-variant-share: must lie in [0, 1] (got {a.new_variant_share})")
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
    from moe_lora_fuzz.fuzz.campaign.precompile import check_knobs

    try:
        check_knobs(device)
    except ValueError as e:
        _fail(str(e))
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
        variant_draw=a.variant_draw,
        new_variant_share=a.new_variant_share,
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
