"""Triton's interpreter converts to fp8 e4m3fn (tl.float8e4nv) wrongly, and this patches it (fuzz/runtime/interpreter.py
installs it with its other patches).

Measured with triton 3.9.0 on CPU, fp32 -> e4m3fn through `x.to(tl.float8e4nv)`:
- a mantissa that rounds up into the next binade loses the carry: 31.0 and 31.5 become 16, not 32 (the exponent
  is not incremented, the mantissa wraps to zero), so about one value in sixteen near a power of two is off by 2x;
- results below the smallest normal (2^-6) flush to zero instead of rounding to the subnormals (1e-3 -> 0, not
  2^-9).
The hardware's conversion (cvt.rn.satfinite.e4m3x2.f32 on sm89+) rounds to nearest even with subnormals and
saturates at +-448; torch's float -> float8_e4m3fn conversion rounds the same way in range (out of range, torch
2.13 saturates and 2.11 gives NaN), so the patched cast clamps to +-448 and converts with torch. Loading e4m3fn
codes and fp8 dots are right in the interpreter and are left alone.
"""

from __future__ import annotations

import numpy as np
import torch

PATCHED_NAME = "fp8 casts"


def _to_f32(data: np.ndarray, dtype, tl) -> np.ndarray | None:
    if dtype == tl.float32:
        return data.astype(np.float32, copy=False)
    if dtype == tl.float16:
        return data.view(np.float16).astype(np.float32)
    if dtype == tl.bfloat16:
        return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return None


def patch(interp, ir, tl) -> None:
    """Replace InterpreterBuilder.create_fp_to_fp for conversions into float8e4nv rounded to nearest even."""
    builder = interp.InterpreterBuilder
    original = builder.create_fp_to_fp

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        rtne = rounding_mode in (None, ir.ROUNDING_MODE.RTNE)
        if dst_type.scalar == tl.float8e4nv and rtne:
            values = _to_f32(np.asarray(src.data), src.dtype.scalar, tl)
            if values is not None:
                codes = torch.from_numpy(np.ascontiguousarray(values)).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
                return interp.TensorHandle(codes.view(torch.uint8).numpy().reshape(values.shape), dst_type.scalar)
        return original(self, src, dst_type, rounding_mode)

    builder.create_fp_to_fp = create_fp_to_fp
