"""The oracle: run one case through one implementation and judge it.

Checks, in order (the first that fails names the verdict's kind):
  reference-disagreement  the naive loop reference and the fp64 reference differ (small cases only):
                          a bug in our references, reported apart from kernel bugs
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
import math
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from moe_lora_fuzz.contract import ACC_UNIT, TF32_UNIT, TINY, UNIT_ROUNDOFF, round_to_tf32, row_divisor
from moe_lora_fuzz.fuzz.data.tensors import Fill, Tensors, materialize
from moe_lora_fuzz.fuzz.runtime.interpreter import wild_access_in
from moe_lora_fuzz.fuzz.runtime.phases import phase
from moe_lora_fuzz.fuzz.space.capabilities import REFUSALS
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import data_features
from moe_lora_fuzz.fuzz.targets.impls import Impl, is_ours, resolve
from moe_lora_fuzz.fuzz.upstream.standins import HarnessGap
from moe_lora_fuzz.reference import moe_lora_fp64, moe_lora_naive

SAFETY = 2.0
UNIT = UNIT_ROUNDOFF
NAIVE_LIMIT = 400_000  # multiply-adds up to which the naive loop reference also runs
DIAGNOSE_MARGIN = 3.0  # finite guard contents for the diagnosis rerun (the first run has NaN)
KINDS = (
    "reference-disagreement",
    "exception",
    "crash",
    "oob-write",
    "oob-read",
    "uninit-read",
    "untouched-changed",
    "nonfinite",
    "mismatch",
    "metamorphic",
    "vacuous",
    "hang",
    "unchecked-precondition",
    "harness-error",
)
PASSING = ("pass", "refused")  # refused: a clean refusal of a case outside the declared space (--probe-contract)
# Kind families: kinds that one cause can produce depending on the data are one family, so triage can
# group them. A wrong row index gives oob-read when the bad row lies past the buffer and mismatch when it
# lies inside; a missing launch gives vacuous or mismatch; a split-K race gives metamorphic or uninit-read.
# All of them are "the values in out are wrong". A stray write, an exception and a crash are observed
# differently and are never merged with wrong values (nor with each other); exceptions and crashes are
# further split by their failure detail (exception type + first frame, or how the process died).
FAMILIES = {
    "reference-disagreement": "reference",
    "exception": "exception",
    "crash": "crash",
    "oob-write": "stray-write",
    "oob-read": "wrong-output",
    "uninit-read": "wrong-output",
    "untouched-changed": "wrong-output",
    "nonfinite": "wrong-output",
    "mismatch": "wrong-output",
    "metamorphic": "wrong-output",
    "vacuous": "wrong-output",
    "hang": "crash",
    "unchecked-precondition": "unchecked-precondition",
    "harness-error": "harness",  # a stand-in gap (fuzz.upstream.standins): stops the campaign, never a finding
}


@dataclass(frozen=True)
class Verdict:
    kind: str  # "pass" or one of KINDS
    impl: str
    signature: str
    message: str = ""
    max_ratio: float = 0.0  # worst |error| / bound over the delta's elements
    worst: list = field(default_factory=list)  # up to 5 elements: index, got, expected, bound
    seconds: float = 0.0
    features: list = field(default_factory=list)  # data-dependent edges the case hit (fuzz.space.coverage)
    failure: str = ""  # exception/crash detail in the signature: "TypeName@path:function" or how it died
    impl_settings: dict | None = None  # the implementation's adapter settings, when it declares `settings`

    @property
    def failed(self) -> bool:
        return self.kind not in PASSING

    @property
    def family(self) -> str:
        return family(self.kind)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "Verdict":
        """The inverse of to_dict, checked field by field: a ValueError names the field (`verdict.<name>`)."""

        def need(name: str, typ: type):
            if name not in d:
                raise ValueError(f"verdict.{name}: missing")
            if not isinstance(d[name], typ) or isinstance(d[name], bool):
                raise ValueError(f"verdict.{name}: wrong type {type(d[name]).__name__}, expected {typ.__name__}")
            return d[name]

        if not isinstance(d, dict):
            raise ValueError("verdict: expected an object")
        kind = need("kind", str)
        if kind != "pass" and kind not in KINDS:
            raise ValueError(f"verdict.kind: unknown kind {kind!r}")
        numbers = {}
        for name in ("max_ratio", "seconds"):
            v = d.get(name, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"verdict.{name}: wrong type {type(v).__name__}, expected a number")
            numbers[name] = float(v)
        worst, features = d.get("worst", []), d.get("features", [])
        if not isinstance(worst, list):
            raise ValueError("verdict.worst: wrong type")
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise ValueError("verdict.features: expected a list of strings")
        failure, settings = d.get("failure", ""), d.get("impl_settings")
        if not isinstance(failure, str):
            raise ValueError("verdict.failure: expected a string")
        if settings is not None and not isinstance(settings, dict):
            raise ValueError("verdict.impl_settings: expected an object or null")
        message = d.get("message", "")
        if not isinstance(message, str):
            raise ValueError(f"verdict.message: wrong type {type(message).__name__}, expected str")
        return cls(
            kind,
            need("impl", str),
            need("signature", str),
            message,
            numbers["max_ratio"],
            worst,
            numbers["seconds"],
            features,
            failure,
            settings,
        )


def family(kind: str) -> str:
    """The kind family ("wrong-output", "stray-write", "exception", "crash", "reference"); "" for pass."""
    return FAMILIES.get(kind, "")


def signature(kind: str, impl: str, case: Case, failure: str = "") -> str:
    """A raw finding's signature: kind, the failure detail for exceptions and crashes (exception type and
    first frame inside the implementation, or how the process died), implementation, and the case's
    coarse class. The class stays here only as a discovery key: a campaign keeps one raw finding (and
    repro file) per class, which gives triage distinct starting points; what identifies a failure is the
    root cause (fuzz.triage.triager), which keeps a class knob only where the minimiser shows it matters."""
    detail = f"{failure}|" if failure else ""
    return f"{kind}|{detail}{impl}|{case.coarse_class}"


_REPO = str(Path(__file__).resolve().parents[2])
_HARNESS_DIRS = tuple(f"{_REPO}/{d}/" for d in ("fuzz", "reference"))  # our harness: never "the implementation"


def _library_frame(filename: str) -> bool:
    import sysconfig

    if "site-packages" in filename or "dist-packages" in filename or filename.startswith("<"):
        return True
    stdlib = sysconfig.get_paths()["stdlib"]
    return filename.startswith(stdlib)


def _frame_name(filename: str, function: str) -> str:
    """path:function, no line number (lines move with every edit) and no absolute prefix: a path inside
    this repository is relative to its root, any other file is named by its base name."""
    root = _REPO + "/"
    path = filename[len(root) :] if filename.startswith(root) else Path(filename).name
    return f"{path}:{function}"


def exception_failure(e: BaseException) -> str:
    """ "TypeName@frame": the exception's type and the innermost frame inside the implementation, i.e. the
    innermost frame that is not the harness (fuzz/, reference/), the standard library or an installed
    package such as torch or triton. For our kernels that is a frame in kernels/. Without such a frame,
    the innermost frame of all."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if not _library_frame(f.filename) and not f.filename.startswith(_HARNESS_DIRS)]
    pick = own[-1] if own else (frames[-1] if frames else None)
    where = _frame_name(pick.filename, pick.name) if pick else "?"
    return f"{type(e).__qualname__}@{where}"


def crash_failure(why: str) -> str:
    """How a worker died, without addresses or timings: "exit-11", "hang", or the error type of a broken
    process ("broke:RuntimeError")."""
    import re

    if "hang" in why:
        return "hang"
    m = re.search(r"exit code (-?\d+|None)", why)
    if m:
        return f"exit{m.group(1)}"
    m = re.search(r"worker broke(?: on this case \(|: )([A-Za-z_][\w.]*)", why)
    return f"broke:{m.group(1)}" if m else "died"


@dataclass
class _Run:
    t: Tensors
    # t.arena before the call, where the oracle judges: on the host for a GPU case built there (Tensors.snapshot)
    before: torch.Tensor
    error: BaseException | None
    after: torch.Tensor | None = None  # t.arena after the call, beside `before` (_after makes it once)


def _after(run: _Run) -> torch.Tensor:
    """The arena after the call, on the device of `before`: a GPU case built on the host is judged on the host
    from one copy of its arena (one transfer and one sync, instead of dozens of tiny kernel launches)."""
    if run.after is None:
        arena = run.t.arena
        run.after = arena if arena.device == run.before.device else arena.to(run.before.device)
    return run.after


def _out_after(run: _Run) -> torch.Tensor:
    """`out` after the call, on the device of `before` (read from _after's copy when it is the arena's view)."""
    t, dev = run.t, run.before.device
    if t.out.device == dev:
        return t.out
    g = _guard(t, "out")
    return g.view_in(_after(run)) if t.out is g.view else t.out.to(dev)


def _guard(t: Tensors, name: str):
    return next(g for g in t.guarded if g.name == name)


def _ref_args(run: _Run):
    """The op's arguments where the references run: beside `before` (host copies for a host-judged case)."""
    t = run.t
    return t.op() if t.arena.device == run.before.device else t.host_op()


def _work(case: Case) -> int:
    """Multiply-adds of the references: up to NAIVE_LIMIT the naive loop runs too, and a GPU case built on the
    host is judged there (a few dozen host ops instead of as many kernel launches; larger ones on the device)."""
    return case.m * case.top_k * case.num_slices * case.rank * (case.k_dim + case.n_dim)


@phase("materialise")
def _prepare(case: Case, device, fill: Fill) -> _Run:
    t = materialize(case, device, fill)
    return _Run(t, t.snapshot(host=_work(case) <= NAIVE_LIMIT), None)


@phase("impl")
def _call(run: _Run, impl: Impl) -> _Run:
    try:
        impl(run.t)
        if run.t.out.is_cuda:
            torch.cuda.synchronize(run.t.out.device)
    except Exception as e:  # the implementation's failure is a verdict, not ours
        run.error = e
    return run


def _execute(case: Case, impl: Impl, device, fill: Fill) -> _Run:
    return _call(_prepare(case, device, fill), impl)


def _bits(a: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return a.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()])
    return a


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _bits(a) == _bits(b)


@dataclass
class _Expected:
    """The reference's view of `out` after the call, with the bound, in fp64."""

    out0: torch.Tensor  # (M, k, W) before the call
    value: torch.Tensor  # (M, k, W) fp64 expected
    bound: torch.Tensor  # (M, k, W) fp64; only meaningful where touched
    touched: torch.Tensor  # (M, k, W) bool: elements that receive a delta


@phase("references")
def _expect(case: Case, run: _Run, precision: str = "ieee") -> tuple[_Expected, str | None]:
    """The references, run before the implementation: they see exactly the inputs it is given.
    precision: the implementation's declared fp32 dot precision ("ieee" or "tf32")."""
    t = run.t
    if case.quant != "none":  # quantized: its own reference and bound (fuzz/judgement/bound_quant.py)
        from moe_lora_fuzz.fuzz.judgement.bound_quant import expect_quant

        return expect_quant(case, run, _Expected, _ref_args(run), _work(case), NAIVE_LIMIT, SAFETY)
    out0 = _guard(t, "out").view_in(run.before)
    ref = moe_lora_fp64(_ref_args(run))
    disagreement = None
    if _work(case) <= NAIVE_LIMIT:  # compared in numpy on the host, where the naive loop's result is
        gap = np.abs(moe_lora_naive(t.host_op()) - ref.delta.cpu().numpy())
        if (gap > 1e-9 * (ref.mag_full.cpu().numpy() + 1e-30)).any():
            disagreement = f"naive and fp64 references differ by up to {gap.max():.3e}"
    dt = t.out.dtype
    u = UNIT[dt]
    u_t = 0.0 if dt == torch.float32 else u
    m, k = case.m, case.top_k
    width = case.num_slices * case.n_dim
    cols = slice(case.offset, case.offset + width)
    value = out0.to(torch.float64, copy=True)
    out0_abs = value[:, :, cols].abs()  # (before the delta goes in)
    value[:, :, cols].add_(ref.delta.view(m, k, width))
    err_delta = ((case.k_dim + 2) * ACC_UNIT * ref.mag_full + (u_t + (case.rank + 2) * ACC_UNIT) * ref.mag_mid).view(
        m, k, width
    )
    if dt == torch.float32 and precision == "tf32":
        err_delta = err_delta + _tf32_term(ref, m, k, width)
    bound = torch.zeros_like(value)
    sk = case.config.expand.split_k
    # SAFETY * (err_delta + 2 sk u (|out0| + G) + 4 TINY), in place, in that order of roundings
    rounding = out0_abs.add_(ref.mag_mid.view(m, k, width)).mul_(2 * sk * u)
    bound[:, :, cols] = err_delta.add_(rounding).add_(4 * TINY[dt]).mul_(SAFETY)
    touched = torch.zeros(value.shape, dtype=torch.bool, device=value.device)
    touched[:, :, cols] = ref.active[:, :, None]
    return _Expected(out0, value, bound, touched), disagreement


def _tf32_term(ref, m: int, k: int, width: int) -> torch.Tensor:
    """The delta error added by rounding every fp32 dot input to TF32 (see the error model)."""
    return (2 * TF32_UNIT * (ref.mag_full + ref.mag_mid)).reshape(m, k, width)


def _worst(got: torch.Tensor, exp: _Expected, ratio: torch.Tensor, n: int = 5) -> list:
    flat = torch.nan_to_num(ratio, nan=math.inf).reshape(-1)
    top = torch.topk(flat, min(n, flat.numel())).indices.tolist()
    shape = exp.value.shape
    rows = []
    for i in top:
        idx = []
        for d in reversed(shape):
            idx.append(i % d)
            i //= d
        idx = tuple(reversed(idx))
        rows.append(
            {
                "index": list(idx),
                "got": float(got[idx]),
                "expected": float(exp.value[idx]),
                "before": float(exp.out0[idx]),
                "bound": float(exp.bound[idx]),
            }
        )
    return rows


@phase("judge")
def _judge(case: Case, run: _Run, exp: _Expected, precision: str = "ieee") -> tuple[str, str, float, list]:
    """(kind, message, max_ratio, worst) of one finished run; kind "pass" when all checks hold.
    Every check is reduced where `before` lives and read back at once (the fuzz loop's hot path): on the host for
    a GPU case built there (after one copy of the arena back), else on the device with one host sync."""
    t = run.t
    writable = t.writable.to(run.before.device)  # (a host-built case judged on the device: one copy)
    stray = ((run.before != _after(run)) & ~writable).any()  # a byte outside every written view changed
    if case.m == 0:
        return ("pass", "", 0.0, []) if not bool(stray) else _oob_write(run)
    out = _out_after(run)
    got = out.double()
    same = _same_bits(out, exp.out0)
    untouched_bad = ~(same | exp.touched)
    ratio = torch.where(exp.touched, (got - exp.value).abs_().div_(exp.bound), 0.0)
    nonfinite = ~(ratio < math.inf)  # NaN/Inf in got where touched (the bound is finite and positive)
    bad = ratio > 1
    # vacuous: active pairs exist, yet not one element of out changed (inputs hold no zeros, so a real
    # delta always changes bits somewhere)
    vacuous = exp.touched.any() & same.all()
    flags = torch.stack([stray, untouched_bad.any(), nonfinite.any(), bad.any(), vacuous]).double()
    *flags, max_ratio = torch.cat([flags, torch.nan_to_num(ratio, nan=math.inf).amax().view(1)]).tolist()
    if flags[0]:
        return _oob_write(run)
    if flags[1]:
        ratio = untouched_bad.double() * math.inf
        return (
            "untouched-changed",
            f"{int(untouched_bad.sum())} elements outside the delta changed "
            "(other columns, base-model or disabled pairs)",
            math.inf,
            _worst(got, exp, ratio),
        )
    if flags[4]:
        return (
            "vacuous",
            f"the implementation changed no element of out although {int(exp.touched.sum())} "
            "delta elements should change",
            max_ratio,
            _worst(got, exp, ratio),
        )
    if flags[2]:
        return "nonfinite", f"{int(nonfinite.sum())} delta elements are NaN/Inf", math.inf, _worst(got, exp, ratio)
    if flags[3]:
        return (
            "mismatch",
            f"{int(bad.sum())} of {int(exp.touched.sum())} delta elements exceed the bound "
            f"(worst {max_ratio:.3g}x){_tf32_hint(case, run, exp, precision)}{_lowp_hint(case, run, exp)}",
            max_ratio,
            _worst(got, exp, ratio),
        )
    return "pass", "", max_ratio, []


def _tf32_hint(case: Case, run: _Run, exp: _Expected, precision: str) -> str:
    """For an fp32 mismatch under the IEEE bound: is the result what TF32 inputs give? The reference is re-run
    on x, A and B reduced to TF32 (rounded, then truncated as Hopper does); the result must then lie within
    the IEEE bound plus the reduction of the intermediate to TF32 (2 * TF32_UNIT * G)."""
    if case.dtype != "float32" or precision == "tf32" or case.quant != "none":
        return ""
    args = _ref_args(run)
    m, k, width = case.m, case.top_k, case.num_slices * case.n_dim
    cols = slice(case.offset, case.offset + width)
    got = _out_after(run)[:, :, cols].double()
    for truncate in (False, True):
        a_tf = [round_to_tf32(a, truncate) for a in args.lora_a]
        b_tf = [round_to_tf32(b, truncate) for b in args.lora_b]
        ref = moe_lora_fp64(replace(args, x=round_to_tf32(args.x, truncate), lora_a=a_tf, lora_b=b_tf))
        want = exp.out0[:, :, cols].double() + ref.delta.reshape(m, k, width)
        allowed = exp.bound[:, :, cols] + SAFETY * 2 * TF32_UNIT * ref.mag_mid.reshape(m, k, width)
        if bool((((got - want).abs() <= allowed) | ~exp.touched[:, :, cols]).all()):
            return (
                "; within the TF32 bound: the kernel appears to round fp32 inputs to TF32 (declare "
                "capabilities={'fp32_precision': 'tf32'} if that is intended)"
            )
    return ""


def _lowp_hint(case: Case, run: _Run, exp: _Expected) -> str:
    """For an fp16/bf16 mismatch with shrink split-K: is it what accumulating the split-K partial sums of the
    intermediate in the activation dtype gives (upstream kernels keep the intermediate in that dtype and add
    the partials with atomics)? Each of the SPLIT_K adds rounds to the dtype, so an intermediate element is off
    by at most SPLIT_K * u * |A||x|, and the output, through expand, by SPLIT_K * u * F (F = |w||B|(|A||x|)).
    Expand's own split-K adds into `out` are in the bound already. Allowed: bound + SAFETY * 2 * SPLIT_K * u * F."""
    split = case.config.shrink.split_k
    if case.dtype == "float32" or split == 1:
        return ""
    u = UNIT[getattr(torch, case.dtype)]
    m, k, width = case.m, case.top_k, case.num_slices * case.n_dim
    cols = slice(case.offset, case.offset + width)
    ref = moe_lora_fp64(_ref_args(run))
    got = _out_after(run)[:, :, cols].double()
    allowed = exp.bound[:, :, cols] + SAFETY * 2 * split * u * ref.mag_full.reshape(m, k, width)
    if bool((((got - exp.value[:, :, cols]).abs() <= allowed) | ~exp.touched[:, :, cols]).all()):
        return (
            f"; within the low-precision split-K bound: partial sums appear to be accumulated in {case.dtype} "
            f"(shrink split_k={split})"
        )
    return ""


def _oob_write(run: _Run) -> tuple[str, str, float, list]:
    """Which buffer was written outside its view (the slow path, taken only on a finding)."""
    for g in run.t.guarded:
        a, b = g.base_in(_after(run)), g.base_in(run.before)
        changed = ~_same_bits(a, b) if g.is_input else ~_same_bits(a, b) & g.guard_mask().to(a.device)
        if bool(changed.any()):
            where = (
                f"input {g.name}: {int(changed.sum())} elements"
                if g.is_input
                else f"{g.name}: {int(changed.sum())} guard elements"
            )
            return "oob-write", f"{where} written", 0.0, []
    return "oob-write", "bytes between the guarded buffers were written", 0.0, []


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
) -> Verdict:
    """Judge `impl_name` on `case`. Never raises for a failure of the implementation.
    metamorphic: also run the configuration twin (the campaign asks on every 4th case).
    permutation: run the permutation twin (on a passing case with an active pair); None: on every case with
    an even seed, i.e. every 2nd case of a campaign, and on every metamorphic one (module docstring: cost).
    guards=False hands the implementation exact-size allocations (see Fill.guards): for compute-sanitizer.
    probe: the declared capability this case breaks (--probe-contract): a clean refusal (REFUSALS raised before
    anything was written) is the verdict `refused`; any failure is `unchecked-precondition`.
    diagnose=False leaves a wrong result as mismatch/nonfinite, without the reruns that tell an out-of-bounds
    or uninitialised read (the same kind family: triage compares families)."""
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
    )
    return probed(v, case, probe)


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
) -> Verdict:
    start = time.perf_counter()
    impl = _as_impl(impl_name, impl)

    settings = _settings(impl.settings or None)  # adapters declare theirs (fuzz.adapters)

    def verdict(kind: str, message: str = "", ratio: float = 0.0, worst=(), failure: str = "") -> Verdict:
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
    edges = data_features(h["topk_ids"], h["token_lora"], h["adapter_enabled"], case.num_experts, case.num_slots, case)
    exp, disagreement = _expect(case, primary, impl.capabilities.fp32_precision)
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
