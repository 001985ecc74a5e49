"""Vectorised fp64 reference of the fused MoE LoRA delta: batched matmuls over routed pairs.

Every routed pair gathers its own (slot, expert) weights; pairs go in chunks so that the gathered weights
stay under CHUNK_ELEMENTS doubles (CUDA_CHUNK_ELEMENTS on a GPU; a fuzz case is one chunk: about thirty ops and
no host sync, which is what keeps the fuzz loop fast). Inactive pairs (base model, disabled slot) are computed too
and multiplied by 0. Besides the delta it returns the magnitudes the oracle's error bound needs, computed from
absolute values in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from moe_lora_fuzz.contract import OpArgs, x_rows

CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk on a CPU: 32 MiB of fp64
# on a GPU: 512 MiB of fp64 per gathered tensor (a few GiB at the peak). Each chunk costs about 25 host operations,
# and the GPU loop is bound by its host: a nightly case is one chunk here (8 on average at the CPU's size)
CUDA_CHUNK_ELEMENTS = 1 << 26


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
    num_slots, num_experts, rank, k_dim = lora_a[0].shape
    n = lora_b[0].shape[2]
    dev = x.device
    rows = x_rows(x, m, k)
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = args.adapter_enabled.to(dev).bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]
    # every pair is computed (no host sync to list the active ones); an inactive pair reads slot 0's weights
    # and is multiplied by a zero weight, which gives its delta and magnitudes exact zeros (inputs are finite)
    weight = active.double()
    if args.mul_routed_weight:
        weight = weight * args.topk_weights.reshape(-1)
    lane = slot.clamp(min=0)
    expert = torch.where(active, expert, 0)  # an inactive pair's expert id is never used, whatever it holds
    per_chunk = CHUNK_ELEMENTS if dev.type == "cpu" else CUDA_CHUNK_ELEMENTS
    chunk = max(1, per_chunk // (s_count * rank * (k_dim + n)))
    parts = []
    for lo in range(0, m * k, chunk):
        hi = min(m * k, lo + chunk)
        sel_lane, sel_expert = lane[lo:hi], expert[lo:hi]
        c = hi - lo
        # (C*S, R, K) and (C*S, N, R): every pair's weights of every slice, gathered once per slice
        a = torch.stack([w[sel_lane, sel_expert] for w in lora_a], 1).double().view(c * s_count, rank, k_dim)
        b = torch.stack([w[sel_lane, sel_expert] for w in lora_b], 1).double().view(c * s_count, n, rank)
        xr = rows[lo:hi].double().repeat_interleave(s_count, dim=0).unsqueeze(2)  # (C*S, K, 1)
        t = torch.bmm(a, xr)  # (C*S, R, 1)
        b_abs = b.abs()
        w = weight[lo:hi].view(c, 1, 1)
        delta = torch.bmm(b, t).view(c, s_count, n) * w
        w = w.abs()
        mag_mid = torch.bmm(b_abs, t.abs_()).view(c, s_count, n) * w
        mag_full = torch.bmm(b_abs, torch.bmm(a.abs_(), xr.abs_())).view(c, s_count, n) * w
        parts.append((delta, mag_full, mag_mid))
    shape = (m, k, s_count, n)
    if len(parts) == 1:
        delta, mag_full, mag_mid = parts[0]
    elif parts:
        delta, mag_full, mag_mid = (torch.cat(p) for p in zip(*parts, strict=True))
    else:  # no routed pair
        delta = mag_full = mag_mid = torch.zeros(shape, dtype=torch.float64, device=dev)
    return Fp64Result(delta.view(shape), active.view(m, k), mag_full.view(shape), mag_mid.view(shape))
