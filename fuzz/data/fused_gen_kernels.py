"""The device side of fused generation (fuzz/data/fused_gen.py builds the job table and launches it).

One launch carries out a list of jobs over destination views anywhere in memory: constant fills (guard bands,
poison, zero rows, the writable mask), signed values and routed-weight grids (fuzz/data/counter_rng.py's
distributions, rounded once into the destination's dtype) and raw 64-bit hashes (for the writers that sort or
pick by them on the host's torch path). The arithmetic is the torch path's, operation for operation: int64
adds and products wrap modulo 2^64, a logical right shift is an arithmetic one and a mask, the Irwin-Hall sum
is an exact integer, then exact float32 (|v| < 2^24, times a power of two), then one round to nearest even.
float32 -> bfloat16 rounds in integer arithmetic (Triton's interpreter truncates), float32 -> float16 by the
compiler's cvt.rn (numpy's correctly rounded astype under the interpreter).
"""

from __future__ import annotations

import moe_lora_fuzz.kernels.runtime  # noqa: F401  first: picks compiler or interpreter before triton.language loads
import triton
import triton.language as tl
from moe_lora_fuzz.fuzz.data import counter_rng as rng

# the job table: W int64 fields per job (fused_gen._Table._add writes them in this order). Kinds: 0 fill,
# 1 signed values, 2 routed-weight grid, 3 hashes, 4 a choice (argmin, or top-k's order). Destination codes:
# 0 float32, 1 float16, 2 bfloat16 (a float32 value rounded once), 3..6 raw bits of 1, 2, 4, 8 bytes.
KIND, FIRST_BLOCK, NUMEL, CODE, ADDR = (
    tl.constexpr(0),
    tl.constexpr(1),
    tl.constexpr(2),
    tl.constexpr(3),
    tl.constexpr(4),
)
SIZES, STRIDES, MULTS = tl.constexpr(5), tl.constexpr(9), tl.constexpr(13)  # 4 each, padded in front (size-1 axes)
KEY, ARG_A, ARG_B, ARG_C, ARG_D = (
    tl.constexpr(17),
    tl.constexpr(18),
    tl.constexpr(19),
    tl.constexpr(20),
    tl.constexpr(21),
)
ARG_E, ARG_F = tl.constexpr(22), tl.constexpr(23)
W = tl.constexpr(24)
INT64_MAX: tl.constexpr = tl.constexpr((1 << 63) - 1)

M1: tl.constexpr = tl.constexpr(rng._s64(rng._M1))  # splitmix64's finaliser constants, as int64
M2: tl.constexpr = tl.constexpr(rng._s64(rng._M2))
F21: tl.constexpr = tl.constexpr(rng._F21)
ODD0: tl.constexpr = tl.constexpr(3 - 3 * (1 << rng._B21))
TINY: tl.constexpr = tl.constexpr(2.0**-24)


@triton.jit
def _srl(h, s: tl.constexpr):
    """Logical right shift of int64 bit patterns."""
    return (h >> s) & ((1 << (64 - s)) - 1)


@triton.jit
def _mix(h):
    h ^= _srl(h, 30)
    h *= M1
    h ^= _srl(h, 27)
    h *= M2
    h ^= _srl(h, 31)
    return h


@triton.jit
def _store_float(addr, y, code, mask):
    """y (float32, finite) rounded once to nearest even into the destination's dtype."""
    if code == 0:  # F32
        tl.store(addr.to(tl.pointer_type(tl.float32)), y, mask=mask)
    elif code == 1:  # F16
        tl.store(addr.to(tl.pointer_type(tl.float16)), y.to(tl.float16), mask=mask)
    else:  # BF16: round to nearest even on the bits (finite values)
        b = y.to(tl.int32, bitcast=True)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        tl.store(addr.to(tl.pointer_type(tl.int16)), r.to(tl.int16), mask=mask)


@triton.jit
def _store_bits(addr, bits, code, mask):
    """Raw bits (int64) of the destination's width."""
    if code == 3:  # RAW8
        tl.store(addr.to(tl.pointer_type(tl.int8)), bits.to(tl.int8), mask=mask)
    elif code == 4:  # RAW16
        tl.store(addr.to(tl.pointer_type(tl.int16)), bits.to(tl.int16), mask=mask)
    elif code == 5:  # RAW32
        tl.store(addr.to(tl.pointer_type(tl.int32)), bits.to(tl.int32), mask=mask)
    else:  # RAW64
        tl.store(addr.to(tl.pointer_type(tl.int64)), bits, mask=mask)


@triton.jit(do_not_specialize=["n_jobs"])
def generate_kernel(
    table_ptr,  # (n_jobs, W) int64
    n_jobs,
    BLOCK: tl.constexpr,
):
    """Grid: (sum over jobs of cdiv(numel, BLOCK),). Each program does one block of one job's elements, in the
    order of the job's grid (row-major), stored through the job's strides from its byte address."""
    pid = tl.program_id(0).to(tl.int64)
    job = pid * 0
    for j in range(1, n_jobs):  # jobs in table order own consecutive blocks
        first = tl.load(table_ptr + j * W + FIRST_BLOCK)
        job = tl.where(pid >= first, j, job)
    row = table_ptr + job * W
    kind = tl.load(row + KIND)
    code = tl.load(row + CODE)
    # int32 index arithmetic (a job has fewer than 2^31 - BLOCK elements: fused_gen checks), int64 from here on
    offs = (pid - tl.load(row + FIRST_BLOCK)).to(tl.int32) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < tl.load(row + NUMEL).to(tl.int32)
    d1 = tl.load(row + SIZES + 1).to(tl.int32)
    d2 = tl.load(row + SIZES + 2).to(tl.int32)
    d3 = tl.load(row + SIZES + 3).to(tl.int32)
    i3 = offs % d3
    rest = offs // d3
    i2 = rest % d2
    rest = rest // d2
    i1 = (rest % d1).to(tl.int64)
    i0 = (rest // d1).to(tl.int64)
    i2 = i2.to(tl.int64)
    i3 = i3.to(tl.int64)
    elem = (
        i0 * tl.load(row + STRIDES)
        + i1 * tl.load(row + STRIDES + 1)
        + i2 * tl.load(row + STRIDES + 2)
        + i3 * tl.load(row + STRIDES + 3)
    )
    size = tl.where(code == 6, 8, tl.where((code == 0) | (code == 5), 4, tl.where(code == 3, 1, 2)))
    addr = tl.load(row + ADDR) + elem * size
    if kind == 0:  # FILL, around a hole (MULTS: its first element, rows, width, row stride; rows 0: none)
        rel = (elem - tl.load(row + MULTS)).to(tl.int32)  # a hole's dest is 1-D, below 2^31 elements
        rows = tl.load(row + MULTS + 1).to(tl.int32)
        stride = tl.maximum(tl.load(row + MULTS + 3).to(tl.int32), 1)
        inside = (rel >= 0) & (rel < rows * stride) & (rel % stride < tl.load(row + MULTS + 2).to(tl.int32))
        _store_bits(addr, i3 * 0 + tl.load(row + ARG_A), code, mask & (inside == 0))
    elif kind == 4:  # CHOICE: shift + the r in [lo, hi) with the rank-th smallest key srl(h, 11) * 2^10 + r
        base = (  # (keys are unique: r is in the low bits); rank 0 (argmin), or the last axis' index (top-k order)
            tl.load(row + KEY)
            + i0 * tl.load(row + MULTS)
            + i1 * tl.load(row + MULTS + 1)
            + i2 * tl.load(row + MULTS + 2)
            + i3 * tl.load(row + MULTS + 3)
        )
        step = tl.load(row + ARG_A)
        rank = tl.where(tl.load(row + ARG_F) != 0, i3, i3 * 0)
        prev = i3 * 0 - 1  # keys are non-negative
        for p in range(0, tl.load(row + ARG_E).to(tl.int32)):  # pass p finds the p-th smallest key
            cur = i3 * 0 + INT64_MAX
            for r in range(tl.load(row + ARG_B).to(tl.int32), tl.load(row + ARG_C).to(tl.int32)):
                r64 = i3 * 0 + r  # int64 (the interpreter iterates Python ints)
                k = _srl(_mix(base + r64 * step), 11) * 1024 + r64
                cur = tl.minimum(cur, tl.where(k > prev, k, INT64_MAX))
            prev = tl.where(rank >= p, cur, prev)
        _store_bits(addr, (prev & 1023) + tl.load(row + ARG_D), code, mask)
    else:
        h = (
            tl.load(row + KEY)
            + i0 * tl.load(row + MULTS)
            + i1 * tl.load(row + MULTS + 1)
            + i2 * tl.load(row + MULTS + 2)
            + i3 * tl.load(row + MULTS + 3)
        )
        h = _mix(h)
        if kind == 3:  # HASH
            _store_bits(addr, h, code, mask)
        elif kind == 1:  # SIGNED: v = 2 S + 3 - 3 * 2^21, odd, |v| < 2^23: exact in float32
            s = (h & F21) + ((h >> 21) & F21) + ((h >> 42) & F21)
            scale = tl.load(row + ARG_A).to(tl.int32).to(tl.float32, bitcast=True)
            y = (2 * s + ODD0).to(tl.float32) * scale
            if tl.load(row + ARG_B) != 0:  # float16 with a scale <= 2^-25: no magnitude below 2^-24
                y = tl.where(tl.abs(y) < TINY, tl.where(y < 0, -TINY, TINY), y)
            _store_float(addr, y, code, mask)
        else:  # GRID: lo + floor(u * span / 2^21) for 21 random bits u, times a power of two
            n = ((_srl(h, 43) * tl.load(row + ARG_B)) >> 21) + tl.load(row + ARG_A)
            scale = tl.load(row + ARG_C).to(tl.int32).to(tl.float32, bitcast=True)
            _store_float(addr, n.to(tl.float32) * scale, code, mask)


generate_kernel.harness = True  # not the implementation's: fuzz.runtime.variants does not count its launches
