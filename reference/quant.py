"""fp64 reference of the quantized op (contract/quant.py), with the terms of its error bound.

The delta is computed from exactly what is stored: every weight is its code times its scale, in fp64. Activations
are quantized as the scheme declares (contract.quant.quantize_activation: x before shrink; the exact intermediate
t before expand, for w8a8). An implementation's intermediate differs from the exact one by its accumulation
error, so it may round an element of t to a neighbouring code where t / s lies that close to a rounding midpoint
(or its dynamic scale moved by as much): the bound allows exactly that, element by element (quantized_activation).
docs/quantization.md states the model; `QuantFp64Result.err` is its delta term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from moe_lora_fuzz.contract import ACC_UNIT, OpArgs, x_rows
from moe_lora_fuzz.contract.quant import (
    QMAX,
    act_group,
    code_dtype,
    dequantize,
    quantize_activation,
    quantizes_activations,
)

CHUNK_ELEMENTS = 1 << 22  # gathered weight elements per chunk of routed pairs
FP8_ACC_UNIT = 2.0**-13  # Hopper's fp8 tensor-core dots keep about 14 bits while accumulating (DeepSeek-V3 report)
# Two exact references (this one and reference/naive_quant.py) sum the intermediate t in fp64 in different orders
# (a batched matmul here, on the campaign's device; a loop there): t agrees to (K + 2) 2^-53 |A| |x|, and where t / s
# lies that close to a rounding midpoint of a w8a8 intermediate (or moves its dynamic scale) they round to
# neighbouring codes; and a dynamic scale amax / qmax may differ by an fp32 ulp (torch on a GPU divides by a scalar
# as a multiply by its reciprocal), which DIV_SLACK covers. `ref_gap` is that allowance, by the same model as an
# implementation's (quantized_activation).
REF_UNIT = 2.0**-53
DIV_SLACK = 2.0**-21  # relative: an implementation's own fp32 scale or v / s (approximate division: 2 ulps)


@dataclass(frozen=True)
class QuantFp64Result:
    delta: torch.Tensor  # (M, k, S, N) float64
    active: torch.Tensor  # (M, k) bool
    err: torch.Tensor  # (M, k, S, N) bound on |delta^ - delta| of a correct implementation (before safety)
    mag_mid: torch.Tensor  # (M, k, S, N) |w| |B| |t|: what the output's rounding scales with
    ref_gap: torch.Tensor  # (M, k, S, N) how far another exact reference may lie (see REF_UNIT)


def dequantized(args: OpArgs) -> tuple[list, list]:
    """fp64 lora_a and lora_b of a quantized call: codes times their group's scale."""
    q = args.quant
    a_out, b_out = [], []
    for a, sa, b, sb in zip(args.lora_a, q.lora_a_scale, args.lora_b, q.lora_b_scale, strict=True):
        a_out.append(dequantize(a, sa, *q.groups(a.shape[2], a.shape[3])))
        b_out.append(dequantize(b, sb, *q.groups(b.shape[2], b.shape[3])))
    return a_out, b_out


def _quantize(v: torch.Tensor, scheme: str, group_k: int, static) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes as fp64, per-column scales fp64) of rows v by the contract's rule (contract.quant.quantize_activation)."""
    q, s = quantize_activation(v.float(), scheme, group_k, static)
    return q.double(), s.double().repeat_interleave(group_k, dim=1)[:, : v.shape[1]]


def _cast(v: torch.Tensor, scheme: str) -> torch.Tensor:
    """Codes (fp64) of already scaled values v: clamped, rounded to nearest even in the code type."""
    dt = code_dtype(scheme)
    qmax = QMAX[dt]
    y = v.float().clamp(-qmax, qmax)
    return (y.to(dt) if dt == torch.float8_e4m3fn else torch.round(y)).double()


def _group_max(v: torch.Tensor, g: int) -> torch.Tensor:
    """max over consecutive groups of g along the last axis, broadcast back to v's shape."""
    k = v.shape[-1]
    groups = -(-k // g)
    pad = groups * g - k
    padded = torch.nn.functional.pad(v, (0, pad)) if pad else v
    return padded.reshape(*v.shape[:-1], groups, g).amax(dim=-1).repeat_interleave(g, dim=-1)[..., :k]


def quantized_activation(v: torch.Tensor, e: torch.Tensor, q, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the reference's dequantized activations, the allowance per element) for activation rows v (rows, K) that
    an implementation knows to within e. The reference quantizes v itself by the declared scheme; an
    implementation's value v^ can quantize differently only where v/s lies within its uncertainty of a rounding
    midpoint (or its dynamic scale moved): the allowance is then the distance between the codes the two ends of
    that interval round to, plus |q| times the scale's uncertainty (rounding is monotone, so Q(v^) lies between)."""
    group_k = act_group(q.group, v.shape[1], q.block_k)
    static = q.static(stage) if q.act == "static" else None
    codes, s = _quantize(v, q.scheme, group_k, static)
    rel_s = torch.zeros_like(v)  # a static scale is given: exact
    if static is None:  # a dynamic scale is amax / qmax of the implementation's values, in its own fp32 division
        amax = _group_max(v.abs(), group_k)
        rel_s = DIV_SLACK + torch.where(amax > 0, _group_max(e, group_k) / amax.clamp(min=1e-300), 0.0)
    ratio = v / s
    radius = e / s + ratio.abs() * (rel_s + DIV_SLACK)  # (and v / s divided in fp32, maybe approximately)
    step = (_cast(ratio + radius, q.scheme) - _cast(ratio - radius, q.scheme)) * s * (1 + rel_s)
    return codes * s, step + codes.abs() * s * rel_s


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
    w8a8 = quantizes_activations(q.scheme)
    unit = FP8_ACC_UNIT if q.scheme == "fp8_w8a8" else ACC_UNIT
    # x as the implementation uses it: its codes times their scales (w8a8), or x itself (w8a16)
    xd, hx = quantized_activation(rows, torch.zeros_like(rows), q, "shrink") if w8a8 else (rows, torch.zeros_like(rows))
    chunk = max(1, CHUNK_ELEMENTS // (s_count * rank * (k_dim + n)))
    parts = []
    for lo in range(0, m * k, chunk):
        hi = min(m * k, lo + chunk)
        c = hi - lo
        a = torch.stack([w[lane[lo:hi], expert[lo:hi]] for w in lora_a], 1)  # (C, S, R, K)
        b = torch.stack([w[lane[lo:hi], expert[lo:hi]] for w in lora_b], 1)  # (C, S, N, R)
        a_abs, b_abs = a.abs(), b.abs()
        xr = xd[lo:hi].view(c, 1, k_dim, 1)
        t = (a @ xr).squeeze(-1)  # (C, S, R)
        e_t = (a_abs @ hx[lo:hi].view(c, 1, k_dim, 1)).squeeze(-1) + (k_dim + 2) * unit * (
            a_abs @ (xr.abs() + hx[lo:hi].view(c, 1, k_dim, 1))
        ).squeeze(-1)
        e_ref = (k_dim + 2) * REF_UNIT * (a_abs @ xr.abs()).squeeze(-1)  # another exact reference's t
        if w8a8:  # the intermediate quantized by the scheme (the reference's), and what an implementation may differ
            flat = t.view(c * s_count, rank)
            td, h_t = quantized_activation(flat, e_t.view(c * s_count, rank), q, "expand")
            h_ref = quantized_activation(flat, e_ref.view(c * s_count, rank), q, "expand")[1].view(t.shape)
            td, h_t = td.view(t.shape), h_t.view(t.shape)
        else:  # w8a16: the intermediate rounded to the activation dtype (or kept: either is within the allowance)
            td, h_t = t, e_t + dtype_unit * (t.abs() + e_t)
            h_ref = e_ref
        w = weight[lo:hi].view(c, 1, 1)
        w_abs = w.abs()
        td_abs = td.abs()
        delta = (b @ td.unsqueeze(-1)).squeeze(-1) * w
        err = (b_abs @ h_t.unsqueeze(-1)).squeeze(-1) + (rank + 2) * unit * (
            b_abs @ (td_abs + h_t).unsqueeze(-1)
        ).squeeze(-1)
        mag_mid = (b_abs @ td_abs.unsqueeze(-1)).squeeze(-1) * w_abs
        ref_gap = (b_abs @ h_ref.unsqueeze(-1)).squeeze(-1) * w_abs
        parts.append((delta, err * w_abs, mag_mid, ref_gap))
    shape = (m, k, s_count, n)
    if parts:
        delta, err, mag_mid, ref_gap = (torch.cat(p) for p in zip(*parts, strict=True))
    else:
        delta = err = mag_mid = ref_gap = torch.zeros(shape, dtype=torch.float64, device=dev)
    return QuantFp64Result(
        delta.view(shape), active.view(m, k), err.view(shape), mag_mid.view(shape), ref_gap.view(shape)
    )
