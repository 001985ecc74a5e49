"""One run of an implementation and its comparison with the references: materialise the case, call the
implementation, compute the expected value and the per-element bound (the error model in
fuzz.judgement.oracle's docstring), and judge the output against it (with the hints a mismatch gets).
fuzz.judgement.oracle runs the checks in order around these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from moe_lora_fuzz.contract import ACC_UNIT, TF32_UNIT, TINY, round_to_tf32
from moe_lora_fuzz.fuzz.data.tensors import Fill, Tensors, materialize
from moe_lora_fuzz.fuzz.judgement.verdict import NAIVE_EVERY, NAIVE_LIMIT, SAFETY, UNIT
from moe_lora_fuzz.fuzz.runtime.phases import phase
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impls import Impl
from moe_lora_fuzz.reference import moe_lora_fp64, moe_lora_naive


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
    ref: object = None  # the fp64 reference's result (reference.Fp64Result), for a later cross-check
    naive_ran: bool = True  # whether the naive loop reference was compared with it (or need not be)


def naive_due(case: Case, device) -> bool:
    """Whether the naive loop reference cross-checks this case up front (within NAIVE_LIMIT): always on a CPU,
    where it is noise beside the interpreted kernels; on a GPU one case in NAIVE_EVERY, by a hash of the case's
    seed (a replay of a case decides as its campaign did). Every failing verdict is cross-checked anyway before
    it is returned (late_cross_check): no finding goes out without the second opinion."""
    if torch.device(device).type == "cpu":
        return True
    mixed = (case.seed * 0x9E3779B97F4A7C15) & (2**64 - 1)  # Fibonacci hashing: consecutive seeds spread
    return (mixed >> 40) % NAIVE_EVERY == 0


def _naive_disagreement(args, ref) -> str | None:
    """The naive loop reference on `args` against the fp64 result `ref`, compared in numpy on the host."""
    gap = np.abs(moe_lora_naive(args) - ref.delta.cpu().numpy())
    if (gap > 1e-9 * (ref.mag_full.cpu().numpy() + 1e-30)).any():
        return f"naive and fp64 references differ by up to {gap.max():.3e}"
    return None


def _args_before(run: _Run):
    """The op's inputs as they were before the call (views into `before`): what the references saw, even after
    an implementation wrote into its inputs."""
    t = run.t

    def v(name: str) -> torch.Tensor:
        return _guard(t, name).view_in(run.before)

    s = t.case.num_slices
    return replace(
        t.op(),
        x=v("x"),
        topk_ids=v("topk_ids"),
        topk_weights=v("topk_weights"),
        token_lora=v("token_lora"),
        adapter_enabled=v("adapter_enabled"),
        lora_a=[v(f"lora_a[{i}]") for i in range(s)],
        lora_b=[v(f"lora_b[{i}]") for i in range(s)],
    )


@phase("references")
def late_cross_check(case: Case, run: _Run, exp: _Expected) -> str | None:
    """The naive cross-check of a case _expect skipped (naive_due), run when its verdict is a failure: the
    disagreement, if the references differ (that verdict then wins, as it would have up front)."""
    if exp.naive_ran or exp.ref is None or _work(case) > NAIVE_LIMIT:
        return None
    exp.naive_ran = True
    return _naive_disagreement(_args_before(run), exp.ref)


@phase("references")
def _expect(case: Case, run: _Run, precision: str = "ieee", naive: bool = True) -> tuple[_Expected, str | None]:
    """The references, run before the implementation: they see exactly the inputs it is given.
    precision: the implementation's declared fp32 dot precision ("ieee" or "tf32").
    naive: cross-check with the naive loop reference now (within NAIVE_LIMIT); else late_cross_check may later."""
    t = run.t
    if case.quant != "none":  # quantized: its own reference and bound (fuzz/judgement/bound_quant.py)
        from moe_lora_fuzz.fuzz.judgement.bound_quant import expect_quant

        return expect_quant(case, run, _Expected, _ref_args(run), _work(case), NAIVE_LIMIT, SAFETY)
    out0 = _guard(t, "out").view_in(run.before)
    ref = moe_lora_fp64(_ref_args(run))
    disagreement = None
    if naive and _work(case) <= NAIVE_LIMIT:  # compared in numpy on the host, where the naive loop's result is
        disagreement = _naive_disagreement(t.host_op(), ref)
    naive_ran = naive or _work(case) > NAIVE_LIMIT
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
    return _Expected(out0, value, bound, touched, ref, naive_ran), disagreement


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
