"""Vectorised fp64 reference of the fused MoE LoRA delta, grouped by (slot, expert).

Each (slot, expert) group multiplies its rows by that group's weights once, so memory stays
O(M*k*(K + R + S*N)) instead of a weight copy per routed token. Besides the delta it returns the
magnitudes the oracle's error bound needs, computed from absolute values in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Fp64Result:
    delta: torch.Tensor  # (M, k, S, N) float64, exact zeros for base-model and disabled pairs
    active: torch.Tensor  # (M, k) bool: pairs that receive a delta
    mag_full: torch.Tensor  # (M, k, S, N) |w| * |B| @ (|A| @ |x|)
    mag_mid: torch.Tensor  # (M, k, S, N) |w| * |B| @ |A @ x|


def x_rows(x: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """Row of x for every flat routed index f = m*k + j, from the layout implied by x's row count."""
    if x.shape[0] == m * k:
        return x
    if x.shape[0] == m:
        return x.repeat_interleave(k, dim=0)
    raise ValueError(f"x: {x.shape[0]} rows; expected M={m} or M*k={m * k}")


def moe_lora_fp64(x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, *,
                  mul_routed_weight: bool) -> Fp64Result:
    m, k = topk_ids.shape
    s_count = len(lora_a)
    num_slots, num_experts, _rank, _kd = lora_a[0].shape
    n = lora_b[0].shape[2]
    dev = x.device
    rows = x_rows(x, m, k).double()
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = adapter_enabled.to(dev).bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]
    weight = topk_weights.reshape(-1).double() if mul_routed_weight else torch.ones(m * k, dtype=torch.float64,
                                                                                    device=dev)
    delta = torch.zeros(m * k, s_count, n, dtype=torch.float64, device=dev)
    mag_full = torch.zeros_like(delta)
    mag_mid = torch.zeros_like(delta)
    idx = torch.nonzero(active).squeeze(1)
    key = slot[idx] * num_experts + expert[idx]
    for g in torch.unique(key).tolist():
        sel = idx[key == g]
        lane, e = divmod(g, num_experts)
        xr = rows[sel]
        w = weight[sel].unsqueeze(1)
        for s in range(s_count):
            a = lora_a[s][lane, e].double()  # (R, K)
            b = lora_b[s][lane, e].double()  # (N, R)
            t = xr @ a.T
            delta[sel, s] = (t @ b.T) * w
            mag_mid[sel, s] = (t.abs() @ b.abs().T) * w.abs()
            mag_full[sel, s] = ((xr.abs() @ a.abs().T) @ b.abs().T) * w.abs()
    shape = (m, k, s_count, n)
    return Fp64Result(delta.view(shape), active.view(m, k), mag_full.view(shape), mag_mid.view(shape))
