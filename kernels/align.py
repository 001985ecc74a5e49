"""moe_lora_align_block_size: per LoRA slot, group routed tokens by expert and pad to BLOCK_M.

A fixed sequence of vectorised torch ops on the tensors' own device with no data-dependent shapes:
no host synchronisation, so it can be captured in a CUDA graph with the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def moe_lora_align_block_size(topk_ids: torch.Tensor, token_lora: torch.Tensor, num_experts: int,
                              num_slots: int, block_m: int, buffers: AlignBuffers | None = None) -> AlignBuffers:
    """Fill (or allocate) the align buffers.

    Within a slot, expert groups appear in expert order and tokens in flat-index order inside a group.
    Tokens with slot -1 are left out; tokens of disabled adapters are kept (the kernels skip them).
    Buffers may be wider than P; only the first P columns of each row are written.
    """
    m, k = topk_ids.shape
    device = topk_ids.device
    num_routed = m * k
    p = padded_length(num_routed, num_experts, block_m)
    if buffers is None:
        buffers = alloc_align(num_slots, num_routed, num_experts, block_m, device)
    groups = num_slots * num_experts
    slot = token_lora.long().repeat_interleave(k)  # (M*k,)
    # base-model pairs go to an extra group `groups`, sorted last and written to a trash cell
    key = torch.where(slot >= 0, slot * num_experts + topk_ids.reshape(-1).long(), groups)
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
    expert = torch.searchsorted(torch.cumsum(nblocks, 1), block, right=True)
    used = block < nblocks.sum(1, keepdim=True)
    buffers.expert_ids[:, : p // block_m].copy_(torch.where(used, expert, -1))
    return buffers
