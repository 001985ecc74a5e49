"""Make Triton's CPU interpreter compute what a GPU computes, for any kernel the harness runs there.

`install()` patches triton 3.9.0's interpreter (triton/runtime/interpreter.py) in place, once per process.
It patches classes (the builder every interpreted kernel calls, and the reduce/scan helpers), and
those are looked up at call time, so kernels decorated before `install()` are covered too.

What is wrong without it, and what each patch does (the interpreter stores bf16 as raw uint16 bits):
- `dot`: bf16 `tl.dot` multiplied the raw bit patterns as integers (relative error ~1e9). Patched: bf16
  operands are widened to fp32 (exact), products are exact in fp32, accumulation in fp32.
- `tf32`: the interpreter ignored `input_precision`, so a TF32 dot equalled an IEEE one and a kernel that
  silently runs fp32 dots in TF32 looked exact on CPU. Patched for fp32 operands, following what a GPU
  does with Triton's default (the precision reaches the builder already resolved: `input_precision=`,
  else TRITON_F32_DEFAULT, else "tf32"):
    "tf32"   both operands keep 10 mantissa bits before an fp32-accumulated product. NVIDIA tensor
             cores read only the top 19 bits of each fp32 register (wgmma "truncates the lower 13 bits";
             Triton's tl.dot docstring warns inputs are truncated "without rounding"), so the default
             rounding is truncation toward zero; `install(tf32_rounding="rne")` rounds to nearest even
             instead (what cuBLAS and TMA descriptors with round_f32_to_tf32 do);
    "tf32x3" the 3-pass split Triton emits: a = big + small, big = a rounded to TF32 (nearest, ties away),
             small = a - big read as TF32,
             a.b ~ small.big + big.small + big.big, each pass in TF32 (close to, not equal to, IEEE);
    "ieee"   unchanged: an fp32 product (numpy's sgemm).
  "bf16x3" / "bf16x6", which the interpreter refused with an AssertionError although a GPU accepts
  them, are allowed and emulated the same way with bf16 pieces (3 and 6 products).
- `atomic_add`: bf16 `tl.atomic_add` raised "Unsupported data type". Patched: a read-modify-write per
  lane (the interpreter runs one program at a time, so nothing else writes meanwhile), old + val formed
  exactly and rounded once to bf16 (nearest even), masked lanes untouched, lanes that share an address
  applied one after another; returns the old values like the hardware.
- `bf16 arithmetic`: + - * / %, negation, comparisons, min/max, fma, clamp and the math functions on
  bf16 operated on the raw bits (bf16 a + b added integers). Patched: computed in fp32 and rounded to
  bf16 (nearest even), which is what the GPU's bf16 instructions give.
- `bf16 casts`: fp32 -> bf16 truncated (the GPU rounds to nearest even); casts between bf16 and fp64,
  fp16 or integers converted raw bits. Patched: exact widening from bf16, one correct rounding into bf16
  (fp64 sources go through round-to-odd fp32, so there is no double rounding), explicit "rtz" honoured.
- `bf16 reductions`: tl.sum / tl.max / tl.cumsum ... over bf16 reduced the raw bits. Patched: reduced in
  fp32 and rounded once to bf16. This is slightly more accurate than a GPU that rounds every step; a
  kernel whose bug is only a bf16 accumulation order is not made visible by this.

Not patched (left as the interpreter has them): atomics other than add on bf16 (they still raise),
fp8 dots (already upcast by the interpreter), out-of-bounds reads (the harness's guard bands catch them).

- `wild access`: a load, store or atomic at an unmapped address killed the whole process with SIGSEGV: a
  crash verdict, a worker restart (seconds of imports) per case, and nothing said about which access. On a
  GPU the same access is an illegal-address fault, or silent garbage when it lands in mapped memory. Patched:
  before every access the interpreter's memory layer asks the kernel (mincore(2), one call per access in the
  common case) whether every masked-on address is mapped; when one is not it raises `WildAccess`, naming the
  kernel, the access and the launch argument whose storage lies nearest (the oracle reports it as oob-read or
  oob-write). Addresses in mapped memory that is not the kernel's are not flagged: a check against the launch
  arguments alone would flag a kernel that reads tensors through a pointer table.

- `numpy scalars`: triton 3.6's interpreter turned a scalar (a 1-element array) into a Python int with
  `int(data)`, which numpy >= 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"):
  every `range(0, tl.cdiv(...))` in a kernel raised. Patched on every version (a no-op where, as in triton
  3.9, the interpreter already reads the element out first). This patch does not depend on the tested versions below.

Tested versions: TESTED_TRITON. On another version, or one whose internals moved, nothing but `numpy
scalars` is patched (`PATCHED` lacks the rest and NOT_PATCHED_REASON says why; it goes to report.json's
environment); callers ask `bf16_atomics_ok()` / `tf32_emulated()`. Builder methods that a tested version
lacks (triton 3.6 has no create_fneg / create_approx_divf: it negates and divides through other methods,
which are patched) are skipped.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import threading

import numpy as np
from moe_lora_fuzz.fuzz.runtime.bits import (  # noqa: F401 (the conversions: callers and tests import them from here)
    _split,
    bf16_bits_to_f32,
    f32_to_bf16_bits,
    f64_to_f32_odd,
    f64_to_f32_rtz,
    round_to_tf32,
    to_bf16_bits,
)

TESTED_TRITON = ("3.6.0", "3.9.0")
TF32_ROUNDINGS = ("truncate", "rne")
# Relative error of one operand rounded to TF32 under the default (truncating) emulation: 2^-10 per input
# (2^-11 with tf32_rounding="rne"). An error bound that models TF32 products should use this.
TF32_INPUT_ROUNDOFF = {"truncate": 2.0**-10, "rne": 2.0**-11}

PATCHED: frozenset = frozenset()  # names of the patches in force: dot, tf32, atomic_add, bf16 arithmetic...
TF32_ROUNDING: str | None = None
NOT_PATCHED_REASON: str | None = None

_BF16_FLOAT_OPS = (
    "create_fadd",
    "create_fsub",
    "create_fmul",
    "create_fdiv",
    "create_frem",
    "create_fneg",
    "create_precise_divf",
    "create_approx_divf",
    "create_minimumf",
    "create_maximumf",
    "create_minnumf",
    "create_maxnumf",
    "create_fma",
    "create_clampf",
    "create_fcmpOLT",
    "create_fcmpOGT",
    "create_fcmpOLE",
    "create_fcmpOGE",
    "create_fcmpOEQ",
    "create_fcmpONE",
    "create_fcmpULT",
    "create_fcmpUGT",
    "create_fcmpULE",
    "create_fcmpUGE",
    "create_fcmpUEQ",
    "create_fcmpUNE",
    "create_cos",
    "create_sin",
    "create_exp",
    "create_exp2",
    "create_log",
    "create_log2",
    "create_sqrt",
    "create_precise_sqrt",
    "create_rsqrt",
    "create_erf",
    "create_floor",
    "create_ceil",
)
_OPTIONAL_FLOAT_OPS = frozenset({"create_fneg", "create_approx_divf", "create_clampf"})  # absent in triton 3.6


def bf16_atomics_ok() -> bool:
    """True when bf16 tl.atomic_add (and bf16 dots) give GPU results under the interpreter. Installs the patch
    first in a process that interprets, so a process that only draws cases agrees with the workers that run
    them (fuzz/space/case.py may then draw bf16 with expand split_k > 1 on CPU)."""
    install_if_interpreting()
    return "atomic_add" in PATCHED and "dot" in PATCHED


def tf32_emulated() -> bool:
    return "tf32" in PATCHED


# ---- the patches ----------------------------------------------------------------------------------------


def _check_internals(interp, ir, core) -> str | None:
    import triton

    if triton.__version__ not in TESTED_TRITON:
        return f"triton {triton.__version__} is not a tested version ({', '.join(TESTED_TRITON)})"
    builder = interp.InterpreterBuilder
    wanted = {
        "create_dot": ["self", "a", "b", "d", "input_precision", "max_num_imprecise_acc"],
        "create_atomic_rmw": ["self", "rmwOp", "ptr", "val", "mask", "sem", "scope"],
        "cast_impl": ["self", "src", "dst_type"],
        "create_fp_to_fp": ["self", "src", "dst_type", "rounding_mode"],
    }
    for name, params in wanted.items():
        fn = getattr(builder, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            return f"InterpreterBuilder.{name} is missing or has another signature"
    for name in _BF16_FLOAT_OPS + ("create_fp_trunc", "create_fp_ext"):
        if name not in _OPTIONAL_FLOAT_OPS and not callable(getattr(builder, name, None)):
            return f"InterpreterBuilder.{name} is missing"
    for owner, name in (
        (interp, "TensorHandle"),
        (interp, "ReduceOps"),
        (interp, "ScanOps"),
        (interp, "interpreter_builder"),
        (interp, "_interpreter"),
        (ir, "INPUT_PRECISION"),
        (ir, "ATOMIC_OP"),
        (ir, "ROUNDING_MODE"),
    ):
        if not hasattr(owner, name):
            return f"{owner.__name__}.{name} is missing"
    if not all(hasattr(ir.INPUT_PRECISION, p) for p in ("IEEE", "TF32", "TF32x3", "BF16x3", "BF16x6")):
        return "ir.INPUT_PRECISION lacks one of IEEE/TF32/TF32x3/BF16x3/BF16x6"
    if not all(hasattr(interp._interpreter, f) for f in ("load", "store", "atomic_rmw")):
        return "the interpreter's C++ load/store/atomic_rmw are missing"
    if not hasattr(core, "tensor"):
        return "triton.language.core.tensor is missing"
    return None


def install(tf32_rounding: str = "truncate") -> frozenset:
    """Patch the interpreter (idempotent); returns the names patched (empty when triton does not match)."""
    global PATCHED, TF32_ROUNDING, NOT_PATCHED_REASON
    if tf32_rounding not in TF32_ROUNDINGS:
        raise ValueError(f"tf32_rounding: {tf32_rounding!r} is not one of {TF32_ROUNDINGS}")
    if PATCHED or NOT_PATCHED_REASON:  # installed already (or found unpatchable: the reason stands)
        if TF32_ROUNDING is not None and tf32_rounding != TF32_ROUNDING:
            raise ValueError(f"tf32_rounding: already installed with {TF32_ROUNDING!r}, asked {tf32_rounding!r}")
        return PATCHED
    import triton.language as tl
    import triton.language.core as core
    import triton.runtime.interpreter as interp
    from triton._C.libtriton import ir

    compat = ("numpy scalars",) if _numpy_scalars(interp) else ()
    reason = _check_internals(interp, ir, core)
    if reason is not None:
        # no stderr line (CLI errors stay one line): campaigns record it in report.json's environment
        NOT_PATCHED_REASON = f"left unpatched ({reason}): bf16 dots/atomics and TF32 are not emulated on CPU"
        PATCHED = frozenset(compat)
        return PATCHED
    _Patches(interp, ir, tl, tf32_rounding).apply()
    from moe_lora_fuzz.fuzz.runtime import interpreter_fp8  # fp32 -> e4m3fn rounding (fuzz/runtime/interpreter_fp8.py)

    interpreter_fp8.patch(interp, ir, tl)
    interp.InterpreterBuilder.bf16_emulated = True  # read by kernels.moe_lora.interpreter_bf16_ok
    TF32_ROUNDING = tf32_rounding
    patched = ("dot", "tf32", "atomic_add", "bf16 arithmetic", "bf16 casts", "bf16 reductions", "fp8 casts")
    PATCHED = frozenset(patched + compat + (("wild access",) if _MINCORE is not None else ()))
    return PATCHED


def _numpy_scalars(interp) -> bool:
    """The `numpy scalars` patch: wrap the interpreter's tensor patching so that `__index__` reads the one
    element of a scalar's array (int() of a 1-element 1-D array raises on numpy >= 2.4). Returns whether it
    is in force; False when the interpreter has no such hook (then nothing needs it, or nothing can be done)."""
    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None:
        return False
    if getattr(original, "numpy_scalars", False):
        return True

    def index(self):
        data = np.asarray(self.handle.data)
        if data.size != 1:
            raise TypeError(f"only a scalar can be used as an index (got {data.size} elements)")
        return int(data.reshape(-1)[0])

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", index)

    patch_lang_tensor.numpy_scalars = True
    interp._patch_lang_tensor = patch_lang_tensor
    return True


class _Patches:
    def __init__(self, interp, ir, tl, tf32_rounding: str):
        self.interp, self.ir, self.tl, self.tf32_rounding = interp, ir, tl, tf32_rounding
        self.builder = interp.InterpreterBuilder

    def apply(self) -> None:
        if _MINCORE is not None:  # first: the bf16 atomic patch below reads memory through it too
            self.interp._interpreter = _CheckedMemory(self.interp._interpreter)
            self.interp.GridExecutor.__call__ = _recording_launch(self.interp.GridExecutor.__call__)
        self._dot()
        self._atomic_add()
        self._casts()
        self._float_ops()
        self._reductions()

    # --- helpers
    def _is_bf16(self, h) -> bool:
        return isinstance(h, self.interp.TensorHandle) and h.dtype == self.tl.bfloat16

    def _widen(self, h):
        return self.interp.TensorHandle(bf16_bits_to_f32(h.data), self.tl.float32)

    def _bf16(self, values, rounding: str = "rne"):
        return self.interp.TensorHandle(to_bf16_bits(values, rounding), self.tl.bfloat16)

    # --- dot
    def _dot(self) -> None:
        original, tl, ir, p = self.builder.create_dot, self.tl, self.ir, self
        prec = ir.INPUT_PRECISION
        opts = p.interp.interpreter_builder.options
        allowed = tuple(opts.allowed_dot_input_precisions) + ("bf16x3", "bf16x6")
        p.interp.interpreter_builder.options = type(opts)(**{**opts.__dict__, "allowed_dot_input_precisions": allowed})

        def tf32(x):
            return round_to_tf32(x, p.tf32_rounding)

        def bf16(x):
            return bf16_bits_to_f32(f32_to_bf16_bits(x))

        def tf32_split(x):  # Triton's 3xTF32: big = cvt.rna(x), small = x - big, read by the MMA as TF32
            big = round_to_tf32(x, "rna")
            return [big, tf32((x - big).astype(np.float32))]

        def bf16_split(parts):
            return lambda x: _split(x, parts, bf16)

        passes = {
            prec.TF32x3: (tf32_split, ((1, 0), (0, 1), (0, 0))),
            prec.BF16x3: (bf16_split(2), ((1, 0), (0, 1), (0, 0))),
            prec.BF16x6: (bf16_split(3), ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0))),
        }

        def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
            if p._is_bf16(a) and p._is_bf16(b):
                return original(self, p._widen(a), p._widen(b), d, prec.IEEE, max_num_imprecise_acc)
            if a.dtype == tl.float32 and b.dtype == tl.float32 and input_precision != prec.IEEE:
                if input_precision == prec.TF32:
                    a = p.interp.TensorHandle(tf32(a.data), tl.float32)
                    b = p.interp.TensorHandle(tf32(b.data), tl.float32)
                    return original(self, a, b, d, prec.IEEE, max_num_imprecise_acc)
                split, order = passes[input_precision]
                pa, pb = split(a.data), split(b.data)
                acc = np.zeros(d.data.shape, dtype=np.float32)
                for i, j in order:  # smallest terms first, like the GPU's pass order
                    acc = (acc + np.matmul(pa[i], pb[j], dtype=np.float32)).astype(np.float32)
                return p.interp.TensorHandle((acc + d.data).astype(d.data.dtype), d.dtype.scalar)
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)

        self.builder.create_dot = create_dot

    # --- atomics
    def _atomic_add(self) -> None:
        original, ir, p = self.builder.create_atomic_rmw, self.ir, self
        c = self.interp._interpreter

        def create_atomic_rmw(self, rmwOp, ptr, val, mask, sem, scope):
            if not (p._is_bf16(val) and rmwOp == ir.ATOMIC_OP.FADD):
                return original(self, rmwOp, ptr, val, mask, sem, scope)
            ptrs, vals, masks = np.broadcast_arrays(ptr.data, val.data, mask.data)
            shape = ptrs.shape
            ptrs, vals, masks = ptrs.ravel(), vals.ravel(), masks.ravel().astype(bool)
            old = np.zeros(ptrs.shape, dtype=np.uint16)
            lanes = np.flatnonzero(masks)
            groups = (
                [lanes] if np.unique(ptrs[lanes]).size == lanes.size else [lanes[i : i + 1] for i in range(lanes.size)]
            )
            for g in groups:  # one vector step when addresses are distinct, else lane by lane in lane order
                if g.size == 0:
                    continue
                on = np.ones(g.size, dtype=bool)
                cur = c.load(ptrs[g], on, np.zeros(g.size, dtype=np.uint16), np.dtype(np.uint16))
                total = bf16_bits_to_f32(cur).astype(np.float64) + bf16_bits_to_f32(vals[g]).astype(np.float64)
                c.store(ptrs[g], to_bf16_bits(total), on)
                old[g] = cur
            return p.interp.TensorHandle(old.reshape(shape), val.dtype.scalar)

        self.builder.create_atomic_rmw = create_atomic_rmw

    # --- casts
    def _convert(self, src, dst, rounding: str):
        tl = self.tl
        s, t = src.dtype.scalar, dst.scalar
        if s == tl.bfloat16:
            wide = bf16_bits_to_f32(src.data)
            if t == tl.bfloat16:
                return self.interp.TensorHandle(src.data.copy(), t)
            return self.interp.TensorHandle(wide.astype(self.interp._get_np_dtype(t)), t)
        return self._bf16(src.data, rounding)

    def _casts(self) -> None:
        tl, p = self.tl, self
        cast, fp_to_fp = self.builder.cast_impl, self.builder.create_fp_to_fp
        rtz = self.ir.ROUNDING_MODE.RTZ

        def involves_bf16(src, dst_type):
            s, t = src.dtype.scalar, dst_type.scalar
            if s.is_fp8() or t.is_fp8() or isinstance(s, tl.pointer_type) or isinstance(t, tl.pointer_type):
                return False
            return tl.bfloat16 in (s, t)

        def cast_impl(self, src, dst_type):
            if involves_bf16(src, dst_type):
                return p._convert(src, dst_type, "rne")
            return cast(self, src, dst_type)

        def create_fp_to_fp(self, src, dst_type, rounding_mode):
            if involves_bf16(src, dst_type):
                return p._convert(src, dst_type, "rtz" if rounding_mode == rtz else "rne")
            return fp_to_fp(self, src, dst_type, rounding_mode)

        self.builder.cast_impl = cast_impl
        self.builder.create_fp_to_fp = create_fp_to_fp
        if not hasattr(self.builder, "get_bf16"):  # triton 3.6: `bf16 tensor * 2.0` found no bf16 constant

            def get_bf16(self, value):
                return p._bf16(np.array([value], dtype=np.float64))

            self.builder.get_bf16 = get_bf16

    # --- bf16 arithmetic
    def _float_ops(self) -> None:
        p = self

        def wrap(original):
            def op(self, *args):
                if not any(p._is_bf16(a) for a in args):
                    return original(self, *args)
                out = original(self, *[p._widen(a) if p._is_bf16(a) else a for a in args])
                if out.data.dtype == np.float32:
                    return p._bf16(out.data)
                return p.interp.TensorHandle(out.data, p.tl.bfloat16)  # a comparison, typed like its operand

            return op

        for name in _BF16_FLOAT_OPS:
            if hasattr(self.builder, name):  # the optional ones (_OPTIONAL_FLOAT_OPS) may be absent
                setattr(self.builder, name, wrap(getattr(self.builder, name)))

    # --- reductions and scans
    def _reductions(self) -> None:
        tl, p = self.tl, self

        def as_type(t, elt, data):
            ty = tl.block_type(elt, list(t.shape)) if t.type.is_block() else elt
            return tl.core.tensor(p.interp.TensorHandle(data, elt), ty)

        def wrap(original):
            def apply(self, input):
                if not isinstance(input, tuple):
                    return apply(self, (input,))[0]
                bf = [isinstance(t, tl.core.tensor) and t.dtype == tl.bfloat16 for t in input]
                if not any(bf):
                    return original(self, input)
                wide = tuple(
                    as_type(t, tl.float32, bf16_bits_to_f32(t.handle.data)) if b else t
                    for t, b in zip(input, bf, strict=True)
                )
                out = original(self, wide)
                return tuple(
                    as_type(o, tl.bfloat16, to_bf16_bits(o.handle.data))
                    if i < len(bf) and bf[i] and o.dtype == tl.float32
                    else o
                    for i, o in enumerate(out)
                )

            return apply

        for cls in (self.interp.ReduceOps, self.interp.ScanOps):
            cls.apply = wrap(cls.apply)


# ---- wild accesses ----------------------------------------------------------------------------------------


class WildAccess(Exception):
    """An interpreted kernel accessed an unmapped address (where the unpatched interpreter segfaults)."""

    def __init__(self, op: str, message: str):
        super().__init__(message)
        self.op = op  # "read" or "write"


def _load_mincore():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.mincore
    except (OSError, AttributeError):  # not Linux: wild accesses still segfault
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_MINCORE = _load_mincore()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MAX_SPAN_PAGES = 1 << 16  # one mincore call covers a span up to 256 MiB; wider spans go page by page
_vec = ctypes.create_string_buffer(_MAX_SPAN_PAGES)
_launch = threading.local()  # the kernel being interpreted and its arguments, for the message


def _mapped(first_page: int, pages: int) -> bool:
    return _MINCORE(first_page * _PAGE, pages * _PAGE, _vec) == 0


def _span_mapped(p: np.ndarray, itemsize: int) -> bool:
    """Whether every page from the lowest to the highest address of `p` is mapped: one mincore call, none
    when the span lies inside one already checked in this launch (a kernel cannot unmap memory)."""
    if p.size == 0:
        return True
    lo, hi = int(p.min()) // _PAGE, (int(p.max()) + itemsize - 1) // _PAGE
    seen = getattr(_launch, "mapped", None)
    if seen and seen[0] <= lo and hi <= seen[1]:
        return True
    if hi - lo < _MAX_SPAN_PAGES and _mapped(lo, hi - lo + 1):
        _launch.mapped = (lo, hi)
        return True
    return False


def _wild_addresses(ptrs, mask, itemsize: int) -> np.ndarray:
    """The masked-on addresses of an access that lie on unmapped pages (empty when all are mapped)."""
    p = np.asarray(ptrs).astype(np.uint64, copy=False)
    if _span_mapped(p, itemsize):  # the common case, masked-off lanes included (their pointers stay near)
        return p.ravel()[:0]
    if mask is not None:
        p = p[np.broadcast_to(np.asarray(mask, dtype=bool), p.shape)]
    p = p.ravel()
    if _span_mapped(p, itemsize):
        return p[:0]
    page = np.uint64(_PAGE)
    ends = (p + np.uint64(itemsize - 1)) // page
    bad = [pg for pg in np.unique(np.concatenate([p // page, ends])).tolist() if not _mapped(pg, 1)]
    return p[np.isin(p // page, bad) | np.isin(ends, bad)]


def _nearest_argument(address: int) -> str:
    """Where `address` lies relative to the nearest tensor argument of the kernel being interpreted (by
    address only: which argument the kernel meant to index is not known here)."""
    best = None
    for name, arg in getattr(_launch, "args", {}).items():
        arg = getattr(arg, "base", arg)  # TensorWrapper
        if not hasattr(arg, "untyped_storage"):
            continue
        storage = arg.untyped_storage()
        start, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        gap = start - address if address < start else address - end + 1 if address >= end else 0
        if best is None or gap < best[0]:
            where = f"starts {gap} bytes after it" if address < start else f"ends {gap - 1} bytes before it"
            best = (gap, f"outside every tensor argument; the nearest, `{name}`, {where}")
    return best[1] if best else "no tensor argument known"


def _wild(op: str, wild: np.ndarray, lanes: int) -> WildAccess:
    kernel = getattr(_launch, "kernel", "a kernel")
    first = int(wild[0])
    return WildAccess(
        op,
        f"{kernel} {op}s {wild.size} of {lanes} lanes at unmapped addresses (first {first:#x}, "
        f"{_nearest_argument(first)}): a segfault here, an illegal address or silent garbage on a GPU",
    )


class _CheckedMemory:
    """Triton's C++ interpreter memory layer, refusing accesses to unmapped pages (see `wild access`)."""

    def __init__(self, raw):
        self._raw = raw

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def _check(self, op: str, ptrs, mask, itemsize: int) -> None:
        wild = _wild_addresses(ptrs, mask, itemsize)
        if wild.size:
            raise _wild(op, wild, int(np.size(ptrs)))

    def load(self, ptrs, mask, other, dtype):
        self._check("read", ptrs, mask, np.dtype(dtype).itemsize)
        return self._raw.load(ptrs, mask, other, dtype)

    def store(self, ptrs, values, mask):
        self._check("write", ptrs, mask, np.asarray(values).dtype.itemsize)
        return self._raw.store(ptrs, values, mask)

    def atomic_rmw(self, op, ptrs, values, mask, sem):
        self._check("write", ptrs, mask, np.asarray(values).dtype.itemsize)
        return self._raw.atomic_rmw(op, ptrs, values, mask, sem)

    def atomic_cas(self, ptrs, cmp, values, sem):
        self._check("write", ptrs, None, np.asarray(values).dtype.itemsize)
        return self._raw.atomic_cas(ptrs, cmp, values, sem)


def _recording_launch(call):
    """GridExecutor.__call__ that remembers the kernel and its arguments while it runs (for `_wild`)."""

    def __call__(self, *args, **kwargs):
        previous = getattr(_launch, "kernel", None), getattr(_launch, "args", {})
        _launch.kernel = getattr(self.fn, "__name__", "a kernel")
        _launch.args = {**dict(zip(self.arg_names, args, strict=False)), **kwargs}
        _launch.mapped = None  # memory may have been freed since the last launch
        try:
            return call(self, *args, **kwargs)
        finally:
            _launch.kernel, _launch.args, _launch.mapped = *previous, None

    return __call__


def wild_access_in(e: BaseException | None) -> WildAccess | None:
    """The WildAccess behind an exception (the interpreter wraps kernel errors in InterpreterError)."""
    while e is not None:
        if isinstance(e, WildAccess):
            return e
        e = e.__cause__ or e.__context__
    return None


def install_if_interpreting() -> frozenset:
    """install() when this process runs kernels on Triton's interpreter (TRITON_INTERPRET=1), else nothing."""
    import os

    return install() if os.environ.get("TRITON_INTERPRET", "0") == "1" else PATCHED
