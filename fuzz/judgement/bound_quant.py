"""The oracle's expectation for a quantized case (contract/quant.py): the fp64 value and its error bound.

Model (docs/quantization.md). Weights are exact: a code times its scale, in fp64. A correct implementation may
differ from the exact delta d = w * B (A x) only by
  - quantizing activations: every x (w8a8) and every intermediate t (w8a8) moves by at most half a quantization
    step at its scale (2^-4 |v| + 2^-10 s for e4m3fn, s/2 for int8), plus what a static scale saturates; w8a16
    rounds t to the activation dtype (unit u);
  - accumulating in fp32: (K + 2) v and (R + 2) v relative to the absolute products, v = 2^-22, or 2^-13 for fp8
    dots (Hopper's fp8 tensor cores keep about 14 bits while accumulating);
so, with e_t the intermediate's error and h_t its quantization,
    |d^ - d| <= |w| (|B| (e_t + h_t) + (R + 2) v |B| (|t| + e_t + h_t)),
    e_t = |A| h_x + (K + 2) v |A| (|x| + h_x),
and adding into `out` rounds as in the unquantized bound: 2 SPLIT_K_expand u (|out0| + G) + 4 tiny, G = |w||B||t|.
The whole is multiplied by the oracle's SAFETY (2), as the unquantized bound is.
"""

from __future__ import annotations

import numpy as np
import torch
from moe_lora_fuzz.contract import TINY, UNIT_ROUNDOFF
from moe_lora_fuzz.reference import moe_lora_naive_quant, moe_lora_quant_fp64


def expect_quant(case, run, expected_cls, ref_args, work: int, naive_limit: int, safety: float):
    """(expected, disagreement) of a quantized case: oracle._Expected built from reference/quant.py."""
    t = run.t
    out0 = next(g for g in t.guarded if g.name == "out").view_in(run.before)
    dt = t.out.dtype
    u = UNIT_ROUNDOFF[dt]
    ref = moe_lora_quant_fp64(ref_args, 0.0 if dt == torch.float32 else u)
    disagreement = None
    if work <= naive_limit:
        gap = np.abs(moe_lora_naive_quant(t.host_op()) - ref.delta.cpu().numpy())
        scale = (ref.mag_mid.cpu().numpy() + ref.delta.abs().cpu().numpy()) + 1e-30
        if (gap > 1e-9 * scale + ref.ref_gap.cpu().numpy()).any():  # ref_gap: codes the two may round apart
            disagreement = f"naive and fp64 quantized references differ by up to {gap.max():.3e}"
    m, k = case.m, case.top_k
    width = case.num_slices * case.n_dim
    cols = slice(case.offset, case.offset + width)
    value = out0.to(torch.float64, copy=True)
    out0_abs = value[:, :, cols].abs()
    value[:, :, cols].add_(ref.delta.view(m, k, width))
    sk = case.config.expand.split_k
    rounding = out0_abs.add_(ref.mag_mid.view(m, k, width)).mul_(2 * sk * u)
    bound = torch.zeros_like(value)
    bound[:, :, cols] = ref.err.view(m, k, width).add(rounding).add_(4 * TINY[dt]).mul_(safety)
    touched = torch.zeros(value.shape, dtype=torch.bool, device=value.device)
    touched[:, :, cols] = ref.active[:, :, None]
    return expected_cls(out0, value, bound, touched), disagreement
