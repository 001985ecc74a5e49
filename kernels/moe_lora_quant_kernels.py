"""Device code only: the quantized parts of the grouped LoRA matmul (contract/quant.py), as @triton.jit helpers that
moe_lora_kernels.moe_lora_matmul_kernel calls under its QUANT switch (QUANT = 0 compiles none of this).

    QUANT   1: fp8 w8a8    2: int8 w8a8    3: int8 w8a16      (QUANT_CODES in moe_lora_quant.py)

Every BLOCK_K tile lies inside one scale group along K (the host clamps BLOCK_K to block_k for block scales), so
a tile's dot of codes is scaled once: acc += dot(x codes, w codes) * x_scale[row, kb] * w_scale[n // group_n, kb].
For w8a8 the activations (x before shrink, the fp32 intermediate before expand) are quantized here, in the tile
that is about to be multiplied, by contract.quant.quantize_activation's rule, bit for bit: the scale of a row's
K-group is amax / qmax (1 for a group of zeros), q = round_to_nearest_even(clamp(v / s, -qmax, qmax)), both
divisions correctly rounded (div_rn). No launch, no host op and no buffer per call for it.
"""

import triton
import triton.language as tl


@triton.jit
def act_scale(amax, QUANT: tl.constexpr):
    """The dynamic scale of a row (or K-group) whose largest magnitude is amax: amax / qmax, 1 where amax is 0."""
    qmax = 448.0 if QUANT == 1 else 127.0
    return tl.where(amax > 0, tl.math.div_rn(amax, tl.full(amax.shape, qmax, tl.float32)), 1.0)


@triton.jit
def group_amax(x_rows, stride_xk, start, stop, token_mask, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """max |x[row, start:stop]| of each row of x_rows (BLOCK_M, 1), in BLOCK_K-wide pieces; 0 for masked rows."""
    amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
    offs = tl.arange(0, BLOCK_K)
    for k in range(start, stop, BLOCK_K):
        cols = k + offs
        v = tl.load(x_rows + cols[None, :] * stride_xk, mask=token_mask[:, None] & (cols < stop)[None, :], other=0.0)
        amax = tl.maximum(amax, tl.max(tl.abs(v.to(tl.float32)), axis=1))
    return amax


@triton.jit
def _rint(y):
    """Round to nearest, ties to even, exactly (y - floor(y) is exact in fp32)."""
    r = tl.floor(y)
    d = y - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), r + 1.0, r)


@triton.jit
def quantize(a, sx, QUANT: tl.constexpr):
    """Codes of the activation tile a (BLOCK_M, BLOCK_K) with per-row scales sx: fp8 e4m3fn (QUANT 1) or int8."""
    qmax = 448.0 if QUANT == 1 else 127.0
    y = tl.math.div_rn(a.to(tl.float32), sx[:, None] + tl.zeros(a.shape, dtype=tl.float32))
    y = tl.minimum(tl.maximum(y, -qmax), qmax)
    if QUANT == 1:
        q = y.to(tl.float8e4nv)
    else:
        q = _rint(y).to(tl.int8)
    return q


@triton.jit
def code_dot(a, b, QUANT: tl.constexpr, NARROW_K: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """fp32 dot of one K tile: codes x codes (w8a8), or activations x codes taken to the activations' dtype (w8a16)."""
    if QUANT != 3 and NARROW_K:  # 8-bit tensor-core dots want K >= 32: fp16 holds every code exactly
        part = tl.dot(a.to(tl.float16), b.to(tl.float16))
    elif QUANT == 2:
        part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
    elif QUANT == 1:
        part = tl.dot(a, b)
    elif UPCAST:
        part = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        part = tl.dot(a, b.to(a.dtype), input_precision=DOT_PRECISION)
    return part
