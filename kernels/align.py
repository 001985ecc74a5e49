"""moe_lora_align_block_size: per LoRA slot, group routed tokens by expert and pad to BLOCK_M.

Runs as a handful of vectorised torch ops on the tensors' own device (no host loop, no sync).
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
    Buffers may be wider than P; only the first P columns of each row are defined.
    """
    m, k = topk_ids.shape
    device = topk_ids.device
    num_routed = m * k
    p = padded_length(num_routed, num_experts, block_m)
    if buffers is None:
        buffers = alloc_align(num_slots, num_routed, num_experts, block_m, device)
    sorted_ids, expert_ids, ntp = buffers.sorted_token_ids, buffers.expert_ids, buffers.num_tokens_post_padded
    sorted_ids[:, :p].fill_(num_routed)
    expert_ids[:, : p // block_m].fill_(-1)

    slot = token_lora.long().repeat_interleave(k)  # (M*k,)
    expert = topk_ids.reshape(-1).long()
    keep = slot >= 0
    flat = torch.arange(num_routed, device=device)[keep]
    slot, expert = slot[keep], expert[keep]
    groups = num_slots * num_experts
    key = slot * num_experts + expert
    counts = torch.bincount(key, minlength=groups)  # (L*E,)
    padded = (counts + block_m - 1) // block_m * block_m
    padded_2d = padded.view(num_slots, num_experts)
    ntp.copy_(padded_2d.sum(1).to(torch.int32))
    # start of each (slot, expert) group inside its slot row
    group_start = (torch.cumsum(padded_2d, 1) - padded_2d).reshape(-1)

    order = torch.argsort(key, stable=True)  # stable: flat-index order inside a group
    key_sorted = key[order]
    first_of_group = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=device) - first_of_group[key_sorted]
    col = group_start[key_sorted] + rank
    row = key_sorted // num_experts
    sorted_ids[row, col] = flat[order].to(torch.int32)

    # one expert id per BLOCK_M block of each nonempty group
    nblocks = padded // block_m  # (L*E,)
    gid = torch.repeat_interleave(torch.arange(groups, device=device), nblocks)
    block_first = torch.cumsum(nblocks, 0) - nblocks
    block_in_group = torch.arange(gid.numel(), device=device) - block_first[gid]
    block_col = group_start[gid] // block_m + block_in_group
    expert_ids[gid // num_experts, block_col] = (gid % num_experts).to(torch.int32)
    return buffers
