"""Naive loop reference of the quantized op: the weights dequantized element by element in numpy (an index
computation of its own, shared with nothing in reference/quant.py), then the naive loop of reference/naive.py.
Like reference/quant.py it takes activations unquantized (their quantization is in the bound)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from moe_lora_fuzz.contract import OpArgs

from .naive import moe_lora_naive


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


def moe_lora_naive_quant(args: OpArgs) -> np.ndarray:
    """The (M, k, S, N) float64 delta of a quantized call."""
    q = args.quant
    a = [
        torch.from_numpy(dequantize_loop(w, sc, *q.groups(w.shape[2], w.shape[3])))
        for w, sc in zip(args.lora_a, q.lora_a_scale, strict=True)
    ]
    b = [
        torch.from_numpy(dequantize_loop(w, sc, *q.groups(w.shape[2], w.shape[3])))
        for w, sc in zip(args.lora_b, q.lora_b_scale, strict=True)
    ]
    return moe_lora_naive(replace(args, lora_a=a, lora_b=b, quant=None))
