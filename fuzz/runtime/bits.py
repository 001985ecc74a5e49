"""Bit-exact float conversions in numpy that the interpreter patch (fuzz.runtime.interpreter) and the tests use:
bf16 <-> fp32 bits with a chosen rounding, fp64 -> fp32 round-to-odd and toward zero, TF32 rounding.
"""

from __future__ import annotations

import numpy as np

# ---- bit-exact conversions (numpy) ------------------------------------------------------------------------


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray, rounding: str = "rne") -> np.ndarray:
    """fp32 -> bf16 bit patterns; NaN stays a (quiet) NaN, overflow becomes inf."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    if rounding == "rtz":
        out = bits >> np.uint32(16)
    else:
        out = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    out = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x0040), out)
    return out.astype(np.uint16)


def f64_to_f32_odd(x: np.ndarray) -> np.ndarray:
    """fp64 -> fp32 rounded to odd: a later rounding to any format with <= 22 mantissa bits is then correct."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)
    inexact = np.isfinite(x) & (f.astype(np.float64) != x)
    toward_zero = np.where(np.abs(f.astype(np.float64)) > np.abs(x), np.nextafter(f, np.float32(0)), f)
    odd = (np.ascontiguousarray(toward_zero).view(np.uint32) | np.uint32(1)).view(np.float32)
    return np.where(inexact, odd, f).astype(np.float32)


def f64_to_f32_rtz(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)
    return np.where(
        np.isfinite(x) & (np.abs(f.astype(np.float64)) > np.abs(x)), np.nextafter(f, np.float32(0)), f
    ).astype(np.float32)


def to_bf16_bits(values: np.ndarray, rounding: str = "rne") -> np.ndarray:
    """Any float or integer array -> bf16 bits, rounded once."""
    values = np.asarray(values)
    if values.dtype == np.float32:
        return f32_to_bf16_bits(values, rounding)
    wide = values.astype(np.float64)
    return f32_to_bf16_bits(f64_to_f32_rtz(wide) if rounding == "rtz" else f64_to_f32_odd(wide), rounding)


def round_to_tf32(x: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """fp32 values keeping 10 mantissa bits (the low 13 cleared); inf and NaN unchanged."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    special = (bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    if rounding == "rne":
        bits_r = bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))
    elif rounding == "rna":  # nearest, ties away from zero: PTX cvt.rna.tf32.f32
        bits_r = bits + np.uint32(0x1000)
    else:
        bits_r = bits
    kept = bits_r & np.uint32(0xFFFFE000)
    return np.where(special, bits, kept).view(np.float32)


def _split(x: np.ndarray, parts: int, piece) -> list:
    """x = p0 + p1 + ... with each p_i = piece(remainder): the operand split of the multi-pass dots."""
    out, rest = [], x
    for _ in range(parts):
        p = piece(rest)
        out.append(p)
        rest = (rest - p).astype(np.float32)
    return out
