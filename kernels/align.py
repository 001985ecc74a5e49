"""moe_lora_align_block_size: per LoRA slot, group routed tokens by expert and pad to BLOCK_M.

On the GPU three Triton launches (align_kernels.py), on CPU tensors the same result from torch ops; neither
synchronises with the host, so a GPU call can be captured in a CUDA graph with the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from .align_kernels import align_count_kernel, align_layout_kernel, align_scatter_kernel
from .config import ALIGN_IMPLS
from .mutants import NO_DEVIATION, Deviation
from .runtime import INTERPRET


def padded_length(num_routed: int, num_experts: int, block_m: int) -> int:
    """P: the one row length every producer and consumer of the align buffers agrees on (vLLM #27311)."""
    raw = num_routed + num_experts * (block_m - 1)
    return -(-raw // block_m) * block_m


@dataclass(frozen=True)
class AlignBuffers:
    sorted_token_ids: torch.Tensor  # (L, >=P) int32; padding holds the sentinel M*k
    expert_ids: torch.Tensor  # (L, >=P/BLOCK_M) int32; -1 for unused blocks
    num_tokens_post_padded: torch.Tensor  # (L,) int32


def alloc_align(num_slots: int, num_routed: int, num_experts: int, block_m: int, device) -> AlignBuffers:
    p = padded_length(num_routed, num_experts, block_m)
    return AlignBuffers(
        torch.empty((num_slots, p), dtype=torch.int32, device=device),
        torch.empty((num_slots, p // block_m), dtype=torch.int32, device=device),
        torch.empty((num_slots,), dtype=torch.int32, device=device),
    )


# Routed pairs per align program (the scatter compares all pairs of a chunk pairwise). Under the
# interpreter, which only tests, a small chunk makes CPU-sized cases cross chunk boundaries too.
CHUNK_INTERPRETED, CHUNK_COMPILED = 32, 128
CHUNK = CHUNK_INTERPRETED if INTERPRET else CHUNK_COMPILED


def moe_lora_align_block_size(
    topk_ids: torch.Tensor,
    token_lora: torch.Tensor,
    num_experts: int,
    num_slots: int,
    block_m: int,
    buffers: AlignBuffers | None = None,
    impl: str = "auto",
    deviation: Deviation = NO_DEVIATION,
) -> AlignBuffers:
    """Fill (or allocate) the align buffers.

    Within a slot, expert groups appear in expert order and pairs in flat-index order inside a group.
    Pairs with slot -1 (base model) or an expert outside [0, E) (not on this rank) are left out; pairs of
    disabled adapters are kept (the kernels skip them). Buffers may be wider than P; only the first P
    columns of each row are written. impl: "triton", "torch" (bitwise the same buffers, tests/test_align.py)
    or "auto": Triton for GPU tensors, torch for CPU tensors (~100x faster than Triton's interpreter here).
    """
    if impl not in ALIGN_IMPLS:
        raise ValueError(f"impl={impl!r}: must be one of {', '.join(ALIGN_IMPLS)}")
    if buffers is None:
        m, k = topk_ids.shape
        buffers = alloc_align(num_slots, m * k, num_experts, block_m, topk_ids.device)
    if impl == "auto":
        impl = "torch" if topk_ids.device.type == "cpu" else "triton"
    if impl == "torch":
        align_torch(topk_ids, token_lora, num_experts, block_m, buffers)
    else:
        align_triton(topk_ids, token_lora, num_experts, block_m, buffers, deviation)
    return buffers


def align_triton(
    topk_ids: torch.Tensor,
    token_lora: torch.Tensor,
    num_experts: int,
    block_m: int,
    buffers: AlignBuffers,
    deviation: Deviation = NO_DEVIATION,
) -> None:
    """Three launches, no host synchronisation: can be captured in a CUDA graph with the kernels."""
    m, k = topk_ids.shape
    num_slots = buffers.num_tokens_post_padded.shape[0]
    num_routed = m * k
    p = padded_length(num_routed, num_experts, block_m)
    num_chunks = max(1, triton.cdiv(num_routed, CHUNK))
    e_p2 = triton.next_power_of_2(num_experts)
    cols = num_slots * e_p2  # one column per (slot, expert) group
    scratch = torch.empty((num_chunks + 2, cols), dtype=torch.int32, device=topk_ids.device)
    totals = torch.zeros((cols,), dtype=torch.int32, device=topk_ids.device)
    srt, exp, ntp = buffers.sorted_token_ids, buffers.expert_ids, buffers.num_tokens_post_padded
    pairs = (topk_ids, token_lora)
    sizes = (num_routed, k, num_experts, num_slots)
    pair_strides = (topk_ids.stride(0), topk_ids.stride(1), token_lora.stride(0))
    align_count_kernel[(num_chunks,)](
        *pairs,
        scratch,
        totals,
        srt,
        *sizes,
        p,
        triton.cdiv(num_slots * p, num_chunks),
        *pair_strides,
        srt.stride(0),
        srt.stride(1),
        CHUNK=CHUNK,
        E_P2=e_p2,
        COLS_P2=triton.next_power_of_2(cols),
        FILL=2048,
    )
    e_tile = min(e_p2, 16)
    num_blocks = p // block_m
    tiles = e_p2 // e_tile
    align_layout_kernel[(num_slots, tiles)](
        scratch,
        totals,
        exp,
        ntp,
        num_chunks,
        num_blocks,
        triton.cdiv(num_blocks, tiles),
        exp.stride(0),
        exp.stride(1),
        ntp.stride(0),
        BLOCK_M=block_m,
        E_P2=e_p2,
        E_TILE=e_tile,
        CHUNK_TILE=4096 // e_tile,
        BLOCK_TILE=64,
    )
    scatter_chunks = triton.cdiv(num_routed - 1, CHUNK) if deviation.scatter_grid_off_by_one else num_chunks
    align_scatter_kernel[(scatter_chunks,)](
        *pairs,
        scratch,
        srt,
        *sizes,
        num_chunks,
        *pair_strides,
        srt.stride(0),
        srt.stride(1),
        CHUNK=CHUNK,
        E_P2=num_experts if deviation.scatter_columns_unpadded else e_p2,
    )


def align_torch(
    topk_ids: torch.Tensor, token_lora: torch.Tensor, num_experts: int, block_m: int, buffers: AlignBuffers
) -> None:
    """Vectorised torch ops with no data-dependent shapes (no host synchronisation either)."""
    num_slots = buffers.num_tokens_post_padded.shape[0]
    m, k = topk_ids.shape
    device = topk_ids.device
    num_routed = m * k
    p = padded_length(num_routed, num_experts, block_m)
    groups = num_slots * num_experts
    slot = token_lora.long().repeat_interleave(k)  # (M*k,)
    # base-model pairs go to an extra group `groups`, sorted last and written to a trash cell
    expert = topk_ids.reshape(-1).long()
    mine = (slot >= 0) & (slot < num_slots) & (expert >= 0) & (expert < num_experts)
    key = torch.where(mine, slot * num_experts + expert, groups)
    counts = torch.zeros(groups + 1, dtype=torch.long, device=device).scatter_add_(0, key, torch.ones_like(key))
    padded = ((counts[:groups] + block_m - 1) // block_m * block_m).view(num_slots, num_experts)
    buffers.num_tokens_post_padded.copy_(padded.sum(1))
    group_start = (torch.cumsum(padded, 1) - padded).reshape(-1)  # column of each group in its slot row

    order = torch.argsort(key, stable=True)  # stable: flat-index order inside a group
    key_sorted = key[order]
    first_of_group = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_routed, device=device) - first_of_group[key_sorted]
    real = key_sorted < groups
    safe_key = key_sorted.clamp(max=groups - 1)
    lin = (safe_key // num_experts) * p + group_start[safe_key] + rank
    lin = torch.where(real, lin, num_slots * p)  # the trash cell
    rows = torch.full((num_slots * p + 1,), num_routed, dtype=torch.int32, device=device)
    rows.index_put_((lin,), order.to(torch.int32))
    buffers.sorted_token_ids[:, :p].copy_(rows[:-1].view(num_slots, p))

    # block b of slot l belongs to the first expert whose cumulative block count exceeds b
    nblocks = padded // block_m  # (L, E)
    block = torch.arange(p // block_m, device=device).expand(num_slots, -1).contiguous()
    block_expert = torch.searchsorted(torch.cumsum(nblocks, 1), block, right=True)
    used = block < nblocks.sum(1, keepdim=True)
    buffers.expert_ids[:, : p // block_m].copy_(torch.where(used, block_expert, -1))
