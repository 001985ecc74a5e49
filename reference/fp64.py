"""Vectorised fp64 reference of the fused MoE LoRA delta: batched matmuls over blocks of routed pairs.

Routed pairs are sorted by their (slot, expert) and laid out in blocks of `tile` pairs, each (slot, expert) group
padded to whole blocks (as the kernels' align does with BLOCK_M); every block gathers its group's weights once and
multiplies them with its pairs' rows in one matmul. So the weights gathered are about (pairs / tile + groups)
blocks' worth instead of one copy per pair, with no host sync: the block count is the bound that the shapes give
(`_layout`), and blocks beyond the data hold only a zero row. The tile is chosen from the shapes alone (`_tile`).
Blocks go in chunks so that the gathered weights stay under CHUNK_ELEMENTS doubles (CUDA_CHUNK_ELEMENTS on a GPU; a
fuzz case is one chunk: a few dozen ops and no host sync, which is what keeps the fuzz loop fast). Inactive pairs
(base model, disabled slot) are computed too, in slot 0's groups, and multiplied by 0. Besides the delta it returns
the magnitudes the oracle's error bound needs, computed from absolute values in fp64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from moe_lora_fuzz.contract import OpArgs, layout_of, row_divisor

CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk on a CPU: 32 MiB of fp64
# on a GPU: 512 MiB of fp64 per gathered tensor (a few GiB at the peak). Each chunk costs about 25 host operations,
# and the GPU loop is bound by its host: a nightly case is one chunk there
CUDA_CHUNK_ELEMENTS = 1 << 26
MAX_TILE = 64  # pairs per block at most


@dataclass(frozen=True)
class Fp64Result:
    delta: torch.Tensor  # (M, k, S, N) float64, exact zeros for base-model and disabled pairs
    active: torch.Tensor  # (M, k) bool: pairs that receive a delta
    mag_full: torch.Tensor  # (M, k, S, N) |w| * |B| @ (|A| @ |x|)
    mag_mid: torch.Tensor  # (M, k, S, N) |w| * |B| @ |A @ x|


def _tile(pairs: int, groups: int) -> int:
    """Pairs per block: the largest power of two up to MAX_TILE that fits the mean group (pairs / groups), so that
    the padding (at most tile - 1 per group) stays about the size of the pairs themselves."""
    tile = 1
    while tile * 2 <= min(MAX_TILE, pairs // max(1, groups)):
        tile *= 2
    return tile


def _layout(key: torch.Tensor, groups: int, tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(position of each pair in the padded block order, the pair at each position (len(key) at padding), each
    block's group, the block count). Groups are contiguous in key order and each starts a new block."""
    pairs, dev = key.numel(), key.device
    key_sorted, order = torch.sort(key, stable=True)  # order: sorted position -> pair
    counts = torch.zeros(groups, dtype=torch.int64, device=dev).index_add_(0, key, torch.ones_like(key))
    padded = counts if tile == 1 else counts.add(tile - 1).div_(tile, rounding_mode="floor").mul_(tile)
    # a sorted pair's position: its sorted index plus the padding of the groups before its own
    shift = padded.cumsum(0).sub_(counts.cumsum(0)).sub_(padded).add_(counts)
    pos_sorted = shift[key_sorted].add_(torch.arange(pairs, device=dev))
    pos = torch.empty_like(pos_sorted).index_put_((order,), pos_sorted)
    blocks = -(-(pairs + min(pairs, groups) * (tile - 1)) // tile)  # a bound: every group pads to a block
    pair_at = torch.full((blocks * tile,), pairs, dtype=torch.int64, device=dev).index_put_((pos_sorted,), order)
    at = pos_sorted if tile == 1 else pos_sorted.div(tile, rounding_mode="floor")
    block_key = torch.zeros(blocks, dtype=torch.int64, device=dev).index_put_((at,), key_sorted)
    return pos, pair_at, block_key, blocks


def moe_lora_fp64(args: OpArgs) -> Fp64Result:
    """The delta of the op called with `args` (its `out`, offset and layout are not read: x's rows give the
    layout, and the delta is returned rather than written)."""
    x, topk_ids, token_lora, lora_a, lora_b = args.x, args.topk_ids, args.token_lora, args.lora_a, args.lora_b
    m, k = topk_ids.shape
    s_count = len(lora_a)
    num_slots, num_experts, rank, k_dim = lora_a[0].shape
    n = lora_b[0].shape[2]
    dev = x.device
    shape = (m, k, s_count, n)
    pairs = m * k
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = args.adapter_enabled.to(dev).bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]
    if pairs == 0:  # no routed pair
        zeros = torch.zeros(shape, dtype=torch.float64, device=dev)
        return Fp64Result(zeros, active.view(m, k), zeros, zeros.clone())
    # every pair is computed (no host sync to list the active ones); an inactive pair reads slot 0's weights
    # and is multiplied by a zero weight, which gives its delta and magnitudes exact zeros (inputs are finite)
    weight = active.double()
    if args.mul_routed_weight:
        weight = weight * args.topk_weights.reshape(-1)
    lane = slot.clamp(min=0)
    expert = torch.where(active, expert, 0)  # an inactive pair's expert id is never used, whatever it holds
    groups = num_slots * num_experts
    tile = _tile(pairs, groups)
    pos, pair_at, block_key, blocks = _layout(lane * num_experts + expert, groups, tile)
    # the row of x at every padded position: pair f reads row f // row_div; padding reads an appended zero row
    row_div = row_divisor(layout_of(x.shape[0], m, k), k)
    # (the padding's pair index, M*k, gives row M*k // row_div = x's row count in either layout: the zero row)
    xs = torch.nn.functional.pad(x, (0, 0, 0, 1)).double()
    row_at = pair_at if row_div == 1 else pair_at.div(row_div, rounding_mode="floor")
    per_chunk = CHUNK_ELEMENTS if dev.type == "cpu" else CUDA_CHUNK_ELEMENTS
    chunk = max(1, per_chunk // (s_count * rank * (k_dim + n) + tile * (k_dim + 3 * s_count * n)))
    parts = []
    for lo in range(0, blocks, chunk):
        hi = min(blocks, lo + chunk)
        c = hi - lo
        sel = block_key[lo:hi]  # (slot, expert) as slot * E + expert: an index into the weights' first two axes
        # (C*S, R, K) and (C*S, N, R): every block's weights of every slice, gathered once per slice
        a = torch.stack([w.flatten(0, 1)[sel] for w in lora_a], 1).double().view(c * s_count, rank, k_dim)
        b = torch.stack([w.flatten(0, 1)[sel] for w in lora_b], 1).double().view(c * s_count, n, rank)
        # (C*S, K, T): each block's rows, once per slice
        xr = xs[row_at[lo * tile : hi * tile]].view(c, 1, tile, k_dim).expand(c, s_count, tile, k_dim)
        xr = xr.reshape(c * s_count, tile, k_dim).transpose(1, 2)
        t = torch.bmm(a, xr)  # (C*S, R, T)
        b_abs = b.abs()
        delta = torch.bmm(b, t)  # (C*S, N, T)
        mag_mid = torch.bmm(b_abs, t.abs_())
        mag_full = torch.bmm(b_abs, torch.bmm(a.abs_(), xr.abs()))
        parts.append(
            [
                p.view(c, s_count, n, tile).permute(0, 3, 1, 2).reshape(c * tile, s_count, n)
                for p in (delta, mag_full, mag_mid)
            ]
        )
    if len(parts) == 1:
        by_position = parts[0]
    else:
        by_position = [torch.cat(p) for p in zip(*parts, strict=True)]
    w = weight.view(pairs, 1, 1)
    delta, mag_full, mag_mid = (p[pos] for p in by_position)
    delta = delta * w
    w = w.abs()
    return Fp64Result(delta.view(shape), active.view(m, k), (mag_full * w).view(shape), (mag_mid * w).view(shape))
