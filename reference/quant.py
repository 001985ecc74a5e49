"""fp64 reference of the quantized op (contract/quant.py), with the terms of its error bound.

The delta is computed from exactly what is stored: every weight is its code times its scale, in fp64. Activations
enter unquantized: quantizing them (x in shrink, the intermediate t in expand) is an error of the implementation
that the bound allows, at most half a quantization step per element at the scale the scheme gives (plus what a
static scale saturates). docs/quantization.md states the model; `QuantFp64Result.err` is its delta term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from moe_lora_fuzz.contract import ACC_UNIT, OpArgs, x_rows
from moe_lora_fuzz.contract.quant import QMAX, act_group, code_dtype, dequantize, quantizes_activations

CHUNK_ELEMENTS = 1 << 22  # gathered weight elements per chunk of routed pairs
FP8_ACC_UNIT = 2.0**-13  # Hopper's fp8 tensor-core dots keep about 14 bits while accumulating (DeepSeek-V3 report)
SCALE_SLACK = 1 + 2.0**-20  # a dynamic scale computed in fp32 (amax / qmax) may exceed the exact one by a few ulps


@dataclass(frozen=True)
class QuantFp64Result:
    delta: torch.Tensor  # (M, k, S, N) float64
    active: torch.Tensor  # (M, k) bool
    err: torch.Tensor  # (M, k, S, N) bound on |delta^ - delta| of a correct implementation (before safety)
    mag_mid: torch.Tensor  # (M, k, S, N) |w| |B| |t|: what the output's rounding scales with


def dequantized(args: OpArgs) -> tuple[list, list]:
    """fp64 lora_a and lora_b of a quantized call: codes times their group's scale."""
    q = args.quant
    a_out, b_out = [], []
    for a, sa, b, sb in zip(args.lora_a, q.lora_a_scale, args.lora_b, q.lora_b_scale, strict=True):
        a_out.append(dequantize(a, sa, *q.groups(a.shape[2], a.shape[3])))
        b_out.append(dequantize(b, sb, *q.groups(b.shape[2], b.shape[3])))
    return a_out, b_out


def half_step(v_abs: torch.Tensor, scale: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """Half a quantization step at |v| with scale s: e4m3fn keeps 3 mantissa bits (2^-4 |v| for normal codes,
    2^-10 s below 2^-6 s), int8 steps by s."""
    if dt == torch.float8_e4m3fn:
        return 2.0**-4 * v_abs + 2.0**-10 * scale
    return 0.5 * scale.expand_as(v_abs)


def _group_amax(v: torch.Tensor, g: int) -> torch.Tensor:
    """amax over consecutive groups of g along the last axis, broadcast back to v's shape."""
    k = v.shape[-1]
    groups = -(-k // g)
    pad = groups * g - k
    padded = torch.nn.functional.pad(v, (0, pad)) if pad else v
    amax = padded.reshape(*v.shape[:-1], groups, g).amax(dim=-1)
    return amax.repeat_interleave(g, dim=-1)[..., :k]


def activation_error(v_abs, e_abs, q, stage: str, dtype_unit: float) -> torch.Tensor:
    """Bound on |deq(Q(v^)) - v| for activations v (…, K) known to within e of the implementation's v^."""
    if not quantizes_activations(q.scheme):
        return dtype_unit * (v_abs + e_abs)  # w8a16: rounded to the activation dtype (fp32: exact)
    dt = code_dtype(q.scheme)
    qmax = QMAX[dt]
    hi = v_abs + e_abs
    static = q.static(stage)
    if static is None:
        scale = _group_amax(hi, act_group(q.group, v_abs.shape[-1], q.block_k)) / qmax * SCALE_SLACK
        return half_step(hi, scale, dt)
    s = float(static.reshape(-1)[0])
    return half_step(hi, torch.full_like(hi, s), dt) + (hi - qmax * s).clamp_(min=0)


def moe_lora_quant_fp64(args: OpArgs, dtype_unit: float = 0.0) -> QuantFp64Result:
    """The delta of a quantized call and its error terms. dtype_unit: unit roundoff of the activation dtype (w8a16
    rounds the intermediate to it before the expand dot)."""
    q = args.quant
    x, topk_ids, token_lora = args.x, args.topk_ids, args.token_lora
    m, k = topk_ids.shape
    lora_a, lora_b = dequantized(args)
    s_count = len(lora_a)
    num_slots, num_experts, rank, k_dim = lora_a[0].shape
    n = lora_b[0].shape[2]
    dev = x.device
    rows = x_rows(x, m, k).double()
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = args.adapter_enabled.to(dev).bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]
    weight = active.double()
    if args.mul_routed_weight:
        weight = weight * args.topk_weights.reshape(-1).double()
    lane = slot.clamp(min=0)
    expert = torch.where(active, expert, 0)
    fp8 = q.scheme == "fp8_w8a8"
    unit = FP8_ACC_UNIT if fp8 else ACC_UNIT
    x_err = activation_error(rows.abs(), torch.zeros_like(rows), q, "shrink", 0.0)  # x is exact: no e term
    chunk = max(1, CHUNK_ELEMENTS // (s_count * rank * (k_dim + n)))
    parts = []
    for lo in range(0, m * k, chunk):
        hi = min(m * k, lo + chunk)
        c = hi - lo
        a = torch.stack([w[lane[lo:hi], expert[lo:hi]] for w in lora_a], 1)  # (C, S, R, K)
        b = torch.stack([w[lane[lo:hi], expert[lo:hi]] for w in lora_b], 1)  # (C, S, N, R)
        xr = rows[lo:hi].view(c, 1, k_dim, 1)
        a_abs, b_abs = a.abs(), b.abs()
        t = (a @ xr).squeeze(-1)  # (C, S, R)
        hx = x_err[lo:hi].view(c, 1, k_dim, 1)
        f_t = (a_abs @ (xr.abs() + hx)).squeeze(-1)
        e_t = (a_abs @ hx).squeeze(-1) + (k_dim + 2) * unit * f_t
        t_abs = t.abs()
        h_t = activation_error(t_abs, e_t, q, "expand", dtype_unit)
        w = weight[lo:hi].view(c, 1, 1)
        w_abs = w.abs()
        delta = (b @ t.unsqueeze(-1)).squeeze(-1) * w
        spread = e_t + h_t
        err = (b_abs @ spread.unsqueeze(-1)).squeeze(-1) + (rank + 2) * unit * (
            b_abs @ (t_abs + spread).unsqueeze(-1)
        ).squeeze(-1)
        mag_mid = (b_abs @ t_abs.unsqueeze(-1)).squeeze(-1) * w_abs
        parts.append((delta, err * w_abs, mag_mid))
    shape = (m, k, s_count, n)
    if parts:
        delta, err, mag_mid = (torch.cat(p) for p in zip(*parts, strict=True))
    else:
        delta = err = mag_mid = torch.zeros(shape, dtype=torch.float64, device=dev)
    return QuantFp64Result(delta.view(shape), active.view(m, k), err.view(shape), mag_mid.view(shape))
