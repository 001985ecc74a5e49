"""Vectorised fp64 reference of the fused MoE LoRA delta: batched matmuls over routed pairs.

Every active pair gathers its own (slot, expert) weights; pairs go in chunks so that the gathered weights
stay under CHUNK_ELEMENTS doubles (a fuzz case is one or two chunks: a few dozen ops and one host sync in
all, which is what keeps the GPU fuzz loop fast). Besides the delta it returns the magnitudes the
oracle's error bound needs, computed from absolute values in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from moe_lora_fuzz.contract import OpArgs, x_rows

CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk: 32 MiB of fp64


@dataclass(frozen=True)
class Fp64Result:
    delta: torch.Tensor  # (M, k, S, N) float64, exact zeros for base-model and disabled pairs
    active: torch.Tensor  # (M, k) bool: pairs that receive a delta
    mag_full: torch.Tensor  # (M, k, S, N) |w| * |B| @ (|A| @ |x|)
    mag_mid: torch.Tensor  # (M, k, S, N) |w| * |B| @ |A @ x|


def moe_lora_fp64(args: OpArgs) -> Fp64Result:
    """The delta of the op called with `args` (its `out`, offset and layout are not read: x's rows give the
    layout, and the delta is returned rather than written)."""
    x, topk_ids, token_lora, lora_a, lora_b = args.x, args.topk_ids, args.token_lora, args.lora_a, args.lora_b
    m, k = topk_ids.shape
    s_count = len(lora_a)
    num_slots, num_experts, _rank, _kd = lora_a[0].shape
    n = lora_b[0].shape[2]
    dev = x.device
    rows = x_rows(x, m, k).double()
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = args.adapter_enabled.to(dev).bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]
    weight = (
        args.topk_weights.reshape(-1).double()
        if args.mul_routed_weight
        else torch.ones(m * k, dtype=torch.float64, device=dev)
    )
    delta = torch.zeros(m * k, s_count, n, dtype=torch.float64, device=dev)
    mag_full = torch.zeros_like(delta)
    mag_mid = torch.zeros_like(delta)
    idx = torch.nonzero(active).squeeze(1)  # the one host sync
    chunk = max(1, CHUNK_ELEMENTS // (_rank * (_kd + n)))
    for lo in range(0, idx.numel(), chunk):
        sel = idx[lo : lo + chunk]
        lane, e = slot[sel], expert[sel]
        xr = rows[sel].unsqueeze(2)  # (C, K, 1)
        w = weight[sel].view(-1, 1)
        for s in range(s_count):
            a = lora_a[s][lane, e].double()  # (C, R, K)
            b = lora_b[s][lane, e].double()  # (C, N, R)
            t = torch.bmm(a, xr)  # (C, R, 1)
            delta[sel, s] = torch.bmm(b, t).squeeze(2) * w
            mag_mid[sel, s] = torch.bmm(b.abs(), t.abs()).squeeze(2) * w.abs()
            mag_full[sel, s] = torch.bmm(b.abs(), torch.bmm(a.abs(), xr.abs())).squeeze(2) * w.abs()
    shape = (m, k, s_count, n)
    return Fp64Result(delta.view(shape), active.view(m, k), mag_full.view(shape), mag_mid.view(shape))
