"""Naive loop reference: one routed pair at a time, in numpy float64, straight from the contract.

Deliberately shares nothing with reference/fp64.py (no grouping, no torch arithmetic) so that the
two can check each other. Only for small cases: it loops in Python over every (token, slot, slice).
"""

from __future__ import annotations

import numpy as np
from moe_lora_fuzz.contract import OpArgs, layout_of, row_divisor


def moe_lora_naive(args: OpArgs) -> np.ndarray:
    """Return the delta of the op called with `args` as an (M, k, S, N) float64 array (`out`, offset and layout
    are not read: x's rows give the layout)."""
    ids = args.topk_ids.cpu().numpy()
    m_count, k = ids.shape
    xs = args.x.double().cpu().numpy()
    row_div = row_divisor(layout_of(xs.shape[0], m_count, k), k)
    weights = args.topk_weights.double().cpu().numpy()
    lanes = args.token_lora.cpu().numpy()
    enabled = args.adapter_enabled.cpu().numpy()
    mul_routed_weight = args.mul_routed_weight
    a_all = [a.double().cpu().numpy() for a in args.lora_a]
    b_all = [b.double().cpu().numpy() for b in args.lora_b]
    n = b_all[0].shape[2]
    out = np.zeros((m_count, k, len(a_all), n))
    for m in range(m_count):
        lane = int(lanes[m])
        if lane < 0 or not enabled[lane]:
            continue
        for j in range(k):
            e = int(ids[m, j])
            row = xs[(m * k + j) // row_div]
            for s in range(len(a_all)):
                d = b_all[s][lane, e] @ (a_all[s][lane, e] @ row)
                out[m, j, s] = d * weights[m, j] if mul_routed_weight else d
    return out
