"""The oracle: run one case through one implementation and judge it.

Checks, in order (the first that fails names the verdict's kind):
  reference-disagreement  the naive loop reference and the fp64 reference differ (small cases only):
                          a bug in our references, reported apart from kernel bugs. The naive loop runs up
                          front on every CPU case and on one GPU case in NAIVE_EVERY (compare.naive_due; it
                          costs milliseconds of Python per case there), and on every failing verdict before
                          it is returned: a finding always has both references' agreement
  exception               the implementation raised
  oob-write               a guard margin of a written buffer changed, or an input buffer was written
  untouched-changed       an element outside the delta's columns, or of a base-model / disabled pair,
                          is not bitwise equal to its value before the call
  nonfinite               NaN/Inf where the delta should be (inputs are always finite)
  mismatch                |out - (out0 + delta64)| > bound (the error model below)
  metamorphic             the same case under another kernel configuration, or with its tokens
                          permuted, disagrees by more than twice the bound
  vacuous                 (checked before nonfinite) some routed pair is active (enabled slot, m > 0) yet
                          not one element of `out` changed: the implementation did nothing at all
Twins run only on a passing case with at least one pair on an enabled slot. The configuration twin runs
when the caller asks (`metamorphic`: every 4th campaign case). The permutation twin runs on every case
with an even seed (every 2nd campaign case, and any replay of it) and on every metamorphic one; it runs in a copy
of the primary's starting bytes with the tokens permuted, not a second materialise.
Decision, measured on CPU (Triton interpreter, 2 loaded cores, first 16 cases of campaign seed 0): a case
costs 7.6 s without the twin and 14.3 s with it (+88%: the twin is a second full materialise and kernel
call), so always on would halve the cases a campaign judges; every 2nd case doubles the twin's old share
(1 in 4) for +44%. It finds what no single run against the reference can: output that depends on where
the tokens sit (in a 60 s campaign it caught align-chunk-plus-one first in one seed of five).
A nonfinite or mismatch verdict is then diagnosed by re-running the case:
  oob-read                the output changes when only the inputs' guard margins change (NaN -> 3.0):
                          the implementation reads outside its inputs; one margin at a time then names
                          the input(s) read out of bounds
  uninit-read             the output changes when only the workspace's initial contents change: it
                          reads workspace it never wrote

Error model (the bound). u = unit roundoff of the dtype (2^-11 fp16, 2^-8 bf16, 2^-24 fp32), v = 2^-22
(fp32 accumulation, twice IEEE's 2^-24 to allow for tensor cores that truncate while aligning
products). Inputs are exact in their dtype and products are exact in fp32, so for a delta element
    d = w * sum_r B[n,r] * t_r,   t_r = sum_k A[r,k] x[k]
the worst case of recursive fp32 summation gives
    |d^ - d| <= (K+2) v F + (u_t + (R+2) v) G
with F = |w| |B| (|A| |x|) and G = |w| |B| |t| computed from absolute values in fp64, and u_t the
rounding of t to the weight dtype before the expand dot (u for fp16/bf16, 0 for fp32). Adding into
`out` rounds once per expand split-K chunk and once more for each partial:
    |out^ - out| <= |d^ - d| + 2 * SPLIT_K_expand * u * (|out0| + G) + tiny
An implementation that declares fp32_precision="tf32" rounds both inputs of each fp32 product to 10 mantissa
bits (relative error TF32_UNIT = 2^-11 each), which adds 2 * TF32_UNIT * (F + G) to the delta's error.
The oracle allows twice that (c = 2). The bound is rigorous for IEEE arithmetic, so correct kernels
never exceed it; it is still tight enough that a scale error like a routed weight applied twice
(|w - 1| |d| with w in [0.1, 0.9]) exceeds it on most elements.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import replace

import torch
from moe_lora_fuzz.contract import row_divisor
from moe_lora_fuzz.fuzz.data.tensors import Fill, materialize
from moe_lora_fuzz.fuzz.judgement.compare import (
    _after,
    _call,
    _execute,
    _expect,
    _Expected,
    _guard,
    _judge,
    _out_after,
    _prepare,
    _Run,
    late_cross_check,
    naive_due,
)
from moe_lora_fuzz.fuzz.judgement.verdict import (  # noqa: F401 (callers import the verdict's names from here)
    DIAGNOSE_MARGIN,
    FAMILIES,
    KINDS,
    PASSING,
    Verdict,
    crash_failure,
    exception_failure,
    family,
    signature,
)
from moe_lora_fuzz.fuzz.runtime.interpreter import wild_access_in
from moe_lora_fuzz.fuzz.runtime.phases import phase
from moe_lora_fuzz.fuzz.space.capabilities import REFUSALS
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import data_features
from moe_lora_fuzz.fuzz.targets.impls import Impl, is_ours, resolve
from moe_lora_fuzz.fuzz.upstream.standins import HarnessGap


def _differ(x: torch.Tensor, y: torch.Tensor, bound: torch.Tensor) -> bool:
    """NaN in one and not the other, or a gap above `bound` anywhere (on the bound's device)."""
    x, y = x.to(bound.device, torch.float64), y.to(bound.device, torch.float64)
    gap = torch.nan_to_num((x - y).abs(), nan=0.0) > bound
    return bool(((torch.isnan(x) != torch.isnan(y)) | gap).any())


def _outputs_differ(a: _Run, b: _Run, bound: torch.Tensor) -> bool:
    if a.error is not None or b.error is not None:
        return (a.error is None) != (b.error is None)
    return _differ(_out_after(a), _out_after(b), bound)


@phase("diagnose")
def _diagnose(case: Case, impl: Impl, device, primary: _Run, exp: _Expected, kind: str, fill: Fill) -> tuple[str, str]:
    """Tell an out-of-bounds read or a read of unwritten workspace from a plain wrong result."""
    finite_margins = _execute(case, impl, device, replace(fill, input_margin=DIAGNOSE_MARGIN))
    if _outputs_differ(primary, finite_margins, exp.bound) and _repeatable(case, impl, device, primary, exp, fill):
        names = _read_out_of_bounds(case, impl, device, primary, exp, fill)
        which = f" of {', '.join(names)}" if names else ""
        return "oob-read", f"output depends on the contents of the guard margins{which}"
    zero_poison = _execute(case, impl, device, replace(fill, input_margin=DIAGNOSE_MARGIN, workspace_poison=0.0))
    if _outputs_differ(finite_margins, zero_poison, exp.bound) and _repeatable(
        case, impl, device, finite_margins, exp, replace(fill, input_margin=DIAGNOSE_MARGIN)
    ):
        return "uninit-read", "output depends on the workspace's initial contents"
    return kind, ""


def _repeatable(case: Case, impl: Impl, device, run: _Run, exp: _Expected, fill: Fill) -> bool:
    """Whether a run with the same inputs and guard contents gives the same output: only then can a change of
    the guard or workspace contents be blamed for a changed output (an implementation whose result differs
    at random between identical runs is intermittent, fuzz.triage.intermittent, not an out-of-bounds reader). One
    more run, taken only when the diagnosis is about to blame the margins or the workspace."""
    return not _outputs_differ(run, _execute(case, impl, device, fill), exp.bound)


def _perturbed(g) -> float | int:
    """Another guard value for buffer `g`: finite for float inputs (their margins hold NaN), 0 for integer
    buffers (a valid id or index, unlike the sentinel), 0.0 for written float buffers (sentinel -7.25)."""
    if not g.base.is_floating_point():
        return 0
    return DIAGNOSE_MARGIN if g.is_input else 0.0


def _read_out_of_bounds(case: Case, impl: Impl, device, primary: _Run, exp: _Expected, fill: Fill) -> list[str]:
    """Names of the buffers whose guard margins the output depends on: every buffer's margin perturbed
    alone would cost one run per buffer; halving the set of perturbed buffers finds one culprit in about
    2*log2(buffers) runs (group testing), and every culprit when there are several."""
    values = {g.name: _perturbed(g) for g in primary.t.guarded}

    def depends(names: list[str]) -> bool:
        run = _execute(case, impl, device, replace(fill, margins={n: values[n] for n in names}))
        return _outputs_differ(primary, run, exp.bound)

    def search(names: list[str], known: bool) -> list[str]:
        if not (known or depends(names)):
            return []
        if len(names) == 1:
            return names
        half = len(names) // 2
        left = search(names[:half], False)
        return left + search(names[half:], not left)  # the culprit must be right if none was left

    # the diagnosis changed only the float inputs' margins, so the culprits are among them; the others
    # (integer inputs, written buffers) are searched only if interactions hide every float one
    floats = [g.name for g in primary.t.guarded if g.is_input and g.base.is_floating_point()]
    return search(floats, True) or search([n for n in values if n not in floats], False)


def _twin_cases(case: Case) -> list[Case]:
    """Same data, another configuration: block sizes and split-K change the kernel's arithmetic path."""
    cfg = case.config
    flipped = type(cfg)(
        block_m=16 if cfg.block_m != 16 else 32,
        shrink=type(cfg.shrink)(block_n=16, block_k=16, split_k=1 if cfg.shrink.split_k > 1 else 2),
        expand=type(cfg.expand)(block_n=16, block_k=16, split_k=1),
        align=cfg.align,
    )
    return [case.replace(config=flipped)]


def _permuted_run(case: Case, impl: Impl, primary: _Run) -> tuple[_Run, torch.Tensor]:
    """Run the case with its tokens permuted; returns the run and the permutation (on the CPU). The permuted
    inputs and `out` are written into a copy of the primary run's starting bytes where they live (on the host
    for a case built there: no gathers on the device), which then become a fresh arena: every buffer of the
    twin keeps its guard bands."""
    start = primary.before.clone()
    cpu_perm = torch.randperm(case.m, generator=torch.Generator().manual_seed(case.seed ^ 0x5EED))
    perm = cpu_perm.to(start.device)
    for name in ("x", "topk_ids", "topk_weights", "token_lora", "out"):
        v = _guard(primary.t, name).view_in(start)
        if name == "x" and row_divisor(case.layout, case.top_k) == 1:  # per-routed rows: a token's k rows move
            v = v.view(case.m, case.top_k, case.k_dim)
        v.copy_(v[perm])
    return _call(_Run(primary.t.fresh(start), start, None), impl), cpu_perm


@phase("twins")
def _metamorphic(
    case: Case,
    impl_name: str,
    impl: Impl,
    device,
    primary: _Run,
    exp: _Expected,
    fill: Fill,
    *,
    configs: bool,
    permutation: bool,
) -> str:
    """Twins need no reference: each is within the bound of the truth, so two agree within twice it.
    The configuration twin runs for every implementation that takes a launch configuration."""
    for twin in _twin_cases(case) if configs and impl.takes_config else []:
        run = _execute(twin, impl, device, fill)
        if run.error is None and _outputs_differ(primary, run, 2 * exp.bound):
            return f"another configuration ({twin.config}) disagrees beyond 2x the bound"
    if permutation and case.m > 1:  # one token: the permutation is the identity
        run, perm = _permuted_run(case, impl, primary)
        perm = perm.to(exp.bound.device)
        if run.error is None and _differ(_out_after(run), _out_after(primary)[perm], 2 * exp.bound[perm]):
            return "permuting the tokens does not permute the output"
    return ""


def _as_impl(impl_name: str, impl) -> Impl:
    if impl is None:
        return resolve(impl_name)
    if isinstance(impl, Impl):
        return impl
    settings = getattr(impl, "settings", None)  # a bare callable (tests, scripts) may declare settings too
    return Impl(
        impl_name,
        impl,
        takes_config=is_ours(impl_name),
        ours=is_ours(impl_name),
        settings=dict(settings) if isinstance(settings, dict) else {},
    )


def _settings(obj) -> dict | None:
    """An implementation's declared settings as plain JSON data (repro files record them)."""
    import dataclasses
    import json

    if obj is None:
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if not isinstance(obj, dict):
        obj = {"repr": repr(obj)}
    return json.loads(json.dumps(obj, default=repr))


def check(
    case: Case,
    impl_name: str,
    device="cpu",
    *,
    metamorphic: bool = False,
    impl: Impl | None = None,
    guards: bool = True,
    permutation: bool | None = None,
    probe: str = "",
    diagnose: bool = True,
    cross_check: bool | None = None,
) -> Verdict:
    """Judge `impl_name` on `case`. Never raises for a failure of the implementation.
    metamorphic: also run the configuration twin (the campaign asks on every 4th case).
    permutation: run the permutation twin (on a passing case with an active pair); None: on every case with
    an even seed, i.e. every 2nd case of a campaign, and on every metamorphic one (module docstring: cost).
    guards=False hands the implementation exact-size allocations (see Fill.guards): for compute-sanitizer.
    probe: the declared capability this case breaks (--probe-contract): a clean refusal (REFUSALS raised before
    anything was written) is the verdict `refused`; any failure is `unchecked-precondition`.
    diagnose=False leaves a wrong result as mismatch/nonfinite, without the reruns that tell an out-of-bounds
    or uninitialised read (the same kind family: triage compares families).
    cross_check: run the naive loop reference beside the fp64 one up front (within NAIVE_LIMIT); None: by
    compare.naive_due (always on a CPU, one case in NAIVE_EVERY on a GPU). A failing verdict is always
    cross-checked before it is returned, so every finding has had both references."""
    v = _check(
        case,
        impl_name,
        device,
        metamorphic=metamorphic and not probe,
        impl=impl,
        guards=guards,
        permutation=False if probe else permutation,
        refusal_ok=bool(probe),
        diagnose=diagnose,
        cross_check=cross_check,
    )
    return probed(v, case, probe)


def compile_ahead(
    case: Case, impl_name: str, device, *, metamorphic: bool, impl: Impl | None = None, where: str = "auto"
) -> None:
    """What a compile-ahead helper (fuzz.campaign.precompile) runs for a case the campaign will judge: the
    implementation on it, and on its configuration twin when the campaign runs that; no reference, no judgement,
    no permutation twin. The variants compiled land in Triton's disk cache, and the helper leaves the GPU to the
    campaign's worker (helpers judging whole cases slowed the worker's GPU phases three to eight times on an H100).
    Failures are the campaign's to find. where: materialize's (host: the case is built on the CPU, one copy to the
    GPU, none of the generator's kernels)."""
    impl = _as_impl(impl_name, impl)
    for c in [case] + (_twin_cases(case) if metamorphic and impl.takes_config else []):
        _call(_Run(materialize(c, device, Fill(), where), None, None), impl)


def probed(v: Verdict, case: Case, probe: str) -> Verdict:
    """Outside the declared capabilities (`probe` names the broken one) any failure, crashes and hangs included,
    is an unchecked precondition; passing and refusing verdicts stay as they are."""
    if not probe or not v.failed or v.kind == "harness-error":
        return v
    return dataclasses.replace(
        v,
        kind="unchecked-precondition",
        signature=f"unchecked-precondition|{probe}|{v.impl}",  # once per broken promise, whatever the class
        message=f"outside its declared capabilities ({probe}) it did not refuse cleanly: {v.kind}: {v.message}",
    )


def _check(
    case: Case,
    impl_name: str,
    device,
    *,
    metamorphic: bool,
    impl,
    guards: bool,
    permutation: bool | None,
    refusal_ok: bool,
    diagnose: bool = True,
    cross_check: bool | None = None,
) -> Verdict:
    start = time.perf_counter()
    impl = _as_impl(impl_name, impl)

    settings = _settings(impl.settings or None)  # adapters declare theirs (fuzz.adapters)

    def verdict(kind: str, message: str = "", ratio: float = 0.0, worst=(), failure: str = "") -> Verdict:
        if kind not in PASSING and kind not in ("reference-disagreement", "harness-error"):
            late = late_cross_check(case, primary, exp)  # a finding always gets the naive second opinion
            if late:
                kind, message, ratio, worst, failure = "reference-disagreement", late, 0.0, (), ""
        return Verdict(
            kind,
            impl_name,
            signature(kind, impl_name, case, failure) if kind not in PASSING else "",
            message,
            ratio,
            list(worst),
            time.perf_counter() - start,
            edges,
            failure,
            settings,
        )

    fill = Fill(guards=guards)
    primary = _prepare(case, device, fill)
    h = primary.t.host  # only the small integer inputs: no copy of the weights from the device
    if hasattr(h, "prefetch"):  # one transfer (one sync) for the three, on a device-built GPU case
        h.prefetch(("topk_ids", "token_lora", "adapter_enabled"))
    edges = data_features(h["topk_ids"], h["token_lora"], h["adapter_enabled"], case.num_experts, case.num_slots, case)
    naive = naive_due(case, device) if cross_check is None else cross_check
    exp, disagreement = _expect(case, primary, impl.capabilities.fp32_precision, naive=naive)
    if disagreement:
        return verdict("reference-disagreement", disagreement)
    _call(primary, impl)
    if impl.trace is not None:  # the upstream wrapper's branches that ran (fuzz.upstream.trace)
        edges = edges + impl.trace()
    if isinstance(primary.error, HarnessGap):
        return verdict("harness-error", str(primary.error))
    if refusal_ok and isinstance(primary.error, REFUSALS) and not bool((primary.before != _after(primary)).any()):
        return verdict("refused", f"{type(primary.error).__name__}: {primary.error}")
    wild = wild_access_in(primary.error)
    if wild is not None:  # the patched CPU interpreter stopped an access to unmapped memory (fuzz.runtime.interpreter)
        return verdict("oob-read" if wild.op == "read" else "oob-write", str(wild))
    if primary.error is not None:
        e = primary.error
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return verdict(
            "exception", f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})", failure=exception_failure(e)
        )
    kind, message, ratio, worst = _judge(case, primary, exp, impl.capabilities.fp32_precision)
    if diagnose and kind in ("nonfinite", "mismatch"):
        kind, why = _diagnose(case, impl, device, primary, exp, kind, fill)
        message = f"{message}; {why}" if why else message
    active = bool(exp.touched.any())  # no pair on an enabled slot: every twin would be a copy of out0
    if permutation is None:
        permutation = metamorphic or case.seed % 2 == 0
    if kind == "pass" and active and permutation:
        why = _metamorphic(
            case, impl_name, impl, device, primary, exp, fill, configs=metamorphic, permutation=permutation
        )
        if why:
            return verdict("metamorphic", why, ratio)
    return verdict(kind, message, ratio, worst)
