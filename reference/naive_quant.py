"""Naive loop reference of the quantized op: the weights dequantized element by element in numpy (an index
computation of its own, shared with nothing in reference/quant.py), then one routed pair at a time, activations
quantized row by row by the contract's rule (contract.quant.quantize_activation), as reference/quant.py does."""

from __future__ import annotations

import numpy as np
import torch
from moe_lora_fuzz.contract import OpArgs, layout_of, row_divisor
from moe_lora_fuzz.contract.quant import act_group, quantize_activation, quantizes_activations


def dequantize_loop(codes: torch.Tensor, scale: torch.Tensor, group_n: int, group_k: int) -> np.ndarray:
    """w[l, e, n, k] = code[l, e, n, k] * scale[l, e, n // group_n, k // group_k], one (n, k) at a time."""
    c = codes.cpu().to(torch.float64).numpy()
    s = scale.cpu().to(torch.float64).numpy()
    out = np.empty_like(c)
    n_dim, k_dim = c.shape[2:]
    for n in range(n_dim):
        for k in range(k_dim):
            out[:, :, n, k] = c[:, :, n, k] * s[:, :, n // group_n, k // group_k]
    return out


def _quantized_row(v: np.ndarray, q, stage: str) -> np.ndarray:
    """One activation row quantized by the scheme and dequantized (float64)."""
    group_k = act_group(q.group, v.shape[0], q.block_k)
    static = q.static(stage) if q.act == "static" else None
    codes, scales = quantize_activation(torch.from_numpy(v).view(1, -1), q.scheme, group_k, static)
    per_col = np.repeat(scales.double().numpy()[0], group_k)[: v.shape[0]]
    return codes.double().numpy()[0] * per_col


def moe_lora_naive_quant(args: OpArgs) -> np.ndarray:
    """The (M, k, S, N) float64 delta of a quantized call, one routed pair and slice at a time."""
    q = args.quant
    w8a8 = quantizes_activations(q.scheme)
    a_all = [dequantize_loop(w, sc, *q.groups(*w.shape[2:])) for w, sc in zip(args.lora_a, q.lora_a_scale, strict=True)]
    b_all = [dequantize_loop(w, sc, *q.groups(*w.shape[2:])) for w, sc in zip(args.lora_b, q.lora_b_scale, strict=True)]
    ids = args.topk_ids.cpu().numpy()
    m_count, k = ids.shape
    xs = args.x.double().cpu().numpy()
    row_div = row_divisor(layout_of(xs.shape[0], m_count, k), k)
    weights = args.topk_weights.double().cpu().numpy()
    lanes = args.token_lora.cpu().numpy()
    enabled = args.adapter_enabled.cpu().numpy()
    out = np.zeros((m_count, k, len(a_all), b_all[0].shape[2]))
    for m in range(m_count):
        lane = int(lanes[m])
        if lane < 0 or not enabled[lane]:
            continue
        for j in range(k):
            e = int(ids[m, j])
            row = xs[(m * k + j) // row_div]
            if w8a8:
                row = _quantized_row(row, q, "shrink")
            for s in range(len(a_all)):
                t = a_all[s][lane, e] @ row
                if w8a8:
                    t = _quantized_row(t, q, "expand")
                d = b_all[s][lane, e] @ t
                out[m, j, s] = d * weights[m, j] if args.mul_routed_weight else d
    return out
