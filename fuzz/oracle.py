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
Twins run only on a passing case with at least one pair on an enabled slot. The configuration twin runs
when the caller asks (`metamorphic`: every 4th campaign case). The permutation twin runs on every case
with an even seed (every 2nd campaign case, and any replay of it) and on every metamorphic one.
Decision, measured on CPU (Triton interpreter, 2 loaded cores, first 16 cases of campaign seed 0): a case
costs 7.6 s without the twin and 14.3 s with it (+88%: the twin is a second full materialise and kernel
call), so always on would halve the cases a campaign judges; every 2nd case doubles the twin's old share
(1 in 4) for +44%. It finds what no single run against the reference can: output that depends on where
the tokens sit (in a 60 s campaign it caught align-chunk-plus-one first in one seed of five).
A nonfinite or mismatch verdict is then diagnosed by re-running the case:
  oob-read                the output changes when only the inputs' guard margins change (NaN -> 3.0):
                          the implementation reads outside its inputs
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
The oracle allows twice that (c = 2). The bound is rigorous for IEEE arithmetic, so correct kernels
never exceed it; it is still tight enough that a scale error like a routed weight applied twice
(|w - 1| |d| with w in [0.1, 0.9]) exceeds it on most elements.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field, replace

import torch

from reference import moe_lora_fp64, moe_lora_naive

from .case import Case
from .coverage import data_features
from .impls import Impl, is_ours, resolve
from .tensors import Fill, Tensors, materialize

SAFETY = 2.0
ACC_UNIT = 2.0 ** -22
UNIT = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}
TINY = {torch.float16: 2.0 ** -24, torch.bfloat16: 2.0 ** -133, torch.float32: 2.0 ** -149}
NAIVE_LIMIT = 400_000  # multiply-adds up to which the naive loop reference also runs
DIAGNOSE_MARGIN = 3.0  # finite guard contents for the diagnosis rerun (the first run has NaN)
KINDS = ("reference-disagreement", "exception", "crash", "oob-write", "oob-read", "uninit-read",
         "untouched-changed", "nonfinite", "mismatch", "metamorphic")


@dataclass(frozen=True)
class Verdict:
    kind: str  # "pass" or one of KINDS
    impl: str
    signature: str
    message: str = ""
    max_ratio: float = 0.0  # worst |error| / bound over the delta's elements
    worst: list = field(default_factory=list)  # up to 5 elements: index, got, expected, bound
    seconds: float = 0.0
    features: list = field(default_factory=list)  # data-dependent edges the case hit (fuzz.coverage)

    @property
    def failed(self) -> bool:
        return self.kind != "pass"

    def to_dict(self) -> dict:
        return asdict(self)


def signature(kind: str, impl: str, case: Case) -> str:
    """What "the same failure" means everywhere: kind, implementation and the case's coarse class."""
    return f"{kind}|{impl}|{case.coarse_class}"


@dataclass
class _Run:
    t: Tensors
    before: torch.Tensor  # snapshot of t.arena taken before the call
    error: BaseException | None


def _prepare(case: Case, device, fill: Fill) -> _Run:
    t = materialize(case, device, fill)
    return _Run(t, t.snapshot(), None)


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


def _expect(case: Case, run: _Run) -> tuple[_Expected, str | None]:
    """The references, run before the implementation: they see exactly the inputs it is given."""
    t = run.t
    out0 = next(g for g in t.guarded if g.name == "out").view_in(run.before)
    kw = dict(mul_routed_weight=case.mul_routed_weight)
    args = (t.x, t.topk_ids, t.topk_weights, t.token_lora, t.adapter_enabled, t.lora_a, t.lora_b)
    ref = moe_lora_fp64(*args, **kw)
    disagreement = None
    work = case.m * case.top_k * case.num_slices * case.rank * (case.k_dim + case.n_dim)
    if work <= NAIVE_LIMIT:
        naive = torch.from_numpy(moe_lora_naive(*t.host_args(), **kw)).to(ref.delta.device)
        gap = (naive - ref.delta).abs()
        if bool((gap > 1e-9 * (ref.mag_full + 1e-30)).any()):
            disagreement = f"naive and fp64 references differ by up to {gap.max().item():.3e}"
    dt = t.out.dtype
    u = UNIT[dt]
    u_t = 0.0 if dt == torch.float32 else u
    m, k = case.m, case.top_k
    width = case.num_slices * case.n_dim
    cols = slice(case.offset, case.offset + width)
    out0_64 = out0.double()
    value = out0_64.clone()
    value[:, :, cols] += ref.delta.reshape(m, k, width)
    err_delta = ((case.k_dim + 2) * ACC_UNIT * ref.mag_full
                 + (u_t + (case.rank + 2) * ACC_UNIT) * ref.mag_mid).reshape(m, k, width)
    bound = torch.zeros_like(value)
    sk = case.config.expand.split_k
    bound[:, :, cols] = SAFETY * (err_delta + 2 * sk * u * (out0_64[:, :, cols].abs()
                                                          + ref.mag_mid.reshape(m, k, width)) + 4 * TINY[dt])
    touched = torch.zeros(value.shape, dtype=torch.bool, device=value.device)
    touched[:, :, cols] = ref.active[:, :, None]
    return _Expected(out0, value, bound, touched), disagreement


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
        rows.append({"index": list(idx), "got": float(got[idx]), "expected": float(exp.value[idx]),
                     "before": float(exp.out0[idx]), "bound": float(exp.bound[idx])})
    return rows


def _judge(case: Case, run: _Run, exp: _Expected) -> tuple[str, str, float, list]:
    """(kind, message, max_ratio, worst) of one finished run; kind "pass" when all checks hold.
    Every check is reduced on the device and read back with one host sync (the fuzz loop's hot path)."""
    t = run.t
    stray = ((run.before != t.arena) & ~t.writable).any()  # a byte outside every written view changed
    if case.m == 0:
        return ("pass", "", 0.0, []) if not bool(stray) else _oob_write(run)
    got = t.out.double()
    untouched_bad = ~exp.touched & ~_same_bits(t.out, exp.out0)
    err = (got - exp.value).abs()
    ratio = torch.where(exp.touched, err / exp.bound, torch.zeros_like(err))
    nonfinite = exp.touched & ~torch.isfinite(got)
    bad = ratio > 1
    *flags, max_ratio = torch.stack([stray.double(), untouched_bad.any().double(), nonfinite.any().double(),
                                     bad.any().double(), torch.nan_to_num(ratio, nan=math.inf).amax()]).tolist()
    if flags[0]:
        return _oob_write(run)
    if flags[1]:
        ratio = untouched_bad.double() * math.inf
        return ("untouched-changed", f"{int(untouched_bad.sum())} elements outside the delta changed "
                "(other columns, base-model or disabled pairs)", math.inf, _worst(got, exp, ratio))
    if flags[2]:
        return "nonfinite", f"{int(nonfinite.sum())} delta elements are NaN/Inf", math.inf, _worst(got, exp, ratio)
    if flags[3]:
        return ("mismatch", f"{int(bad.sum())} of {int(exp.touched.sum())} delta elements exceed the bound "
                f"(worst {max_ratio:.3g}x)", max_ratio, _worst(got, exp, ratio))
    return "pass", "", max_ratio, []


def _oob_write(run: _Run) -> tuple[str, str, float, list]:
    """Which buffer was written outside its view (the slow path, taken only on a finding)."""
    for g in run.t.guarded:
        a, b = g.base, g.base_in(run.before)
        changed = ~_same_bits(a, b) if g.is_input else ~_same_bits(a, b) & g.guard_mask()
        if bool(changed.any()):
            where = f"input {g.name}: {int(changed.sum())} elements" if g.is_input else \
                f"{g.name}: {int(changed.sum())} guard elements"
            return "oob-write", f"{where} written", 0.0, []
    return "oob-write", "bytes between the guarded buffers were written", 0.0, []


def _differ(x: torch.Tensor, y: torch.Tensor, bound: torch.Tensor) -> bool:
    """NaN in one and not the other, or a gap above `bound` anywhere."""
    x, y = x.double(), y.double()
    gap = torch.nan_to_num((x - y).abs(), nan=0.0) > bound
    return bool(((torch.isnan(x) != torch.isnan(y)) | gap).any())


def _outputs_differ(a: _Run, b: _Run, bound: torch.Tensor) -> bool:
    if a.error is not None or b.error is not None:
        return (a.error is None) != (b.error is None)
    return _differ(a.t.out, b.t.out, bound)


def _diagnose(case: Case, impl: Impl, device, primary: _Run, exp: _Expected, kind: str,
              fill: Fill) -> tuple[str, str]:
    """Tell an out-of-bounds read or a read of unwritten workspace from a plain wrong result."""
    finite_margins = _execute(case, impl, device, replace(fill, input_margin=DIAGNOSE_MARGIN))
    if _outputs_differ(primary, finite_margins, exp.bound):
        return "oob-read", "output depends on the contents of the inputs' guard margins"
    zero_poison = _execute(case, impl, device, replace(fill, input_margin=DIAGNOSE_MARGIN, workspace_poison=0.0))
    if _outputs_differ(finite_margins, zero_poison, exp.bound):
        return "uninit-read", "output depends on the workspace's initial contents"
    return kind, ""


def _twin_cases(case: Case) -> list[Case]:
    """Same data, another configuration: block sizes and split-K change the kernel's arithmetic path."""
    cfg = case.config
    flipped = type(cfg)(block_m=16 if cfg.block_m != 16 else 32,
                        shrink=type(cfg.shrink)(block_n=16, block_k=16, split_k=1 if cfg.shrink.split_k > 1 else 2),
                        expand=type(cfg.expand)(block_n=16, block_k=16, split_k=1), align=cfg.align)
    return [case.replace(config=flipped)]


def _permuted_run(case: Case, impl: Impl, device, fill: Fill) -> tuple[_Run, torch.Tensor]:
    """Run the case with its tokens permuted; returns the run and the permutation."""
    t = materialize(case, device, fill)
    perm = torch.randperm(case.m, generator=torch.Generator().manual_seed(case.seed ^ 0x5EED)).to(t.out.device)
    k = case.top_k
    if case.layout == "per_routed":
        t.x = t.x.reshape(case.m, k, case.k_dim)[perm].reshape(case.m * k, case.k_dim)
    else:
        t.x = t.x[perm]
    t.topk_ids, t.topk_weights, t.token_lora = t.topk_ids[perm], t.topk_weights[perm], t.token_lora[perm]
    t.out = t.out[perm]
    return _call(_Run(t, t.snapshot(), None), impl), perm


def _metamorphic(case: Case, impl_name: str, impl: Impl, device, primary: _Run, exp: _Expected,
                 fill: Fill, *, configs: bool, permutation: bool) -> str:
    """Twins need no reference: each is within the bound of the truth, so two agree within twice it."""
    for twin in (_twin_cases(case) if configs and is_ours(impl_name) else []):
        run = _execute(twin, impl, device, fill)
        if run.error is None and _outputs_differ(primary, run, 2 * exp.bound):
            return f"another configuration ({twin.config}) disagrees beyond 2x the bound"
    if permutation and case.m > 1:  # one token: the permutation is the identity
        run, perm = _permuted_run(case, impl, device, fill)
        if run.error is None and _differ(run.t.out, primary.t.out[perm], 2 * exp.bound[perm]):
            return "permuting the tokens does not permute the output"
    return ""


def check(case: Case, impl_name: str, device="cpu", *, metamorphic: bool = False, impl: Impl | None = None,
          guards: bool = True, permutation: bool | None = None) -> Verdict:
    """Judge `impl_name` on `case`. Never raises for a failure of the implementation.
    metamorphic: also run the configuration twin (the campaign asks on every 4th case).
    permutation: run the permutation twin (on a passing case with an active pair); None: on every case with
    an even seed, i.e. every 2nd case of a campaign, and on every metamorphic one (module docstring: cost).
    guards=False hands the implementation exact-size allocations (see Fill.guards): for compute-sanitizer."""
    start = time.perf_counter()
    impl = impl or resolve(impl_name)

    def verdict(kind: str, message: str = "", ratio: float = 0.0, worst=()) -> Verdict:
        return Verdict(kind, impl_name, signature(kind, impl_name, case) if kind != "pass" else "", message,
                       ratio, list(worst), time.perf_counter() - start, edges)

    fill = Fill(guards=guards)
    primary = _prepare(case, device, fill)
    _x, ids, _w, lanes, enabled, _a, _b = primary.t.host_args()
    edges = data_features(ids, lanes, enabled, case.num_experts, case.num_slots, case)
    exp, disagreement = _expect(case, primary)
    if disagreement:
        return verdict("reference-disagreement", disagreement)
    _call(primary, impl)
    if primary.error is not None:
        e = primary.error
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return verdict("exception", f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})")
    kind, message, ratio, worst = _judge(case, primary, exp)
    if kind in ("nonfinite", "mismatch"):
        kind, why = _diagnose(case, impl, device, primary, exp, kind, fill)
        message = f"{message}; {why}" if why else message
    active = bool(exp.touched.any())  # no pair on an enabled slot: every twin would be a copy of out0
    if permutation is None:
        permutation = metamorphic or case.seed % 2 == 0
    if kind == "pass" and active and permutation:
        why = _metamorphic(case, impl_name, impl, device, primary, exp, fill, configs=metamorphic,
                           permutation=permutation)
        if why:
            return verdict("metamorphic", why, ratio)
    return verdict(kind, message, ratio, worst)
