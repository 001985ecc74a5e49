"""Device code of align: three launches, no host synchronisation, deterministic output.

Routed pairs are cut into chunks of CHUNK flat indices; every program handles one (chunk, slot).
    count:   per (slot, chunk) expert histogram -> scratch; also fills a stripe of sorted_ids with the sentinel
    layout:  per slot, exclusive scan of the histograms over chunks (in place) and over padded experts ->
             group starts and ends, num_tokens_post_padded
    scatter: per (slot, chunk) each pair's position = group start + pairs of its group in earlier chunks
             + earlier pairs of its group in this chunk, so groups keep flat-index order; also a stripe of
             expert_ids from the group ends
scratch is (L, num_chunks + 2, E_P2) int32; rows num_chunks and num_chunks + 1 of a slot hold its group
starts and ends. Only the layout launch is serial (one program per slot), so it does the least.
"""

import triton
import triton.language as tl

from . import runtime  # noqa: F401  sets TRITON_INTERPRET on GPU-less machines before @triton.jit below


@triton.jit
def _pairs_of_slot(topk_ids_ptr, token_lora_ptr, f, slot, num_routed, top_k, num_experts,
                   stride_im, stride_ik, stride_lora):
    """Expert of each flat index f, and whether the pair belongs to `slot` with an expert in [0, E)."""
    valid = f < num_routed
    token = f // top_k
    expert = tl.load(topk_ids_ptr + token * stride_im + (f % top_k) * stride_ik, mask=valid, other=-1)
    expert = expert.to(tl.int32)
    lane = tl.load(token_lora_ptr + token * stride_lora, mask=valid, other=-1)
    return expert, valid & (lane == slot) & (expert >= 0) & (expert < num_experts)


@triton.jit(do_not_specialize=["num_routed", "top_k", "num_experts", "num_chunks", "padded_len", "stripe"])
def align_count_kernel(topk_ids_ptr, token_lora_ptr, scratch_ptr, sorted_ptr,
                       num_routed, top_k, num_experts, num_chunks, padded_len, stripe,
                       stride_im, stride_ik, stride_lora, stride_sl, stride_sp,
                       CHUNK: tl.constexpr, E_P2: tl.constexpr, FILL: tl.constexpr):
    c = tl.program_id(0)
    slot = tl.program_id(1)
    f = c * CHUNK + tl.arange(0, CHUNK)
    expert, mine = _pairs_of_slot(topk_ids_ptr, token_lora_ptr, f, slot, num_routed, top_k, num_experts,
                                  stride_im, stride_ik, stride_lora)
    e = tl.arange(0, E_P2)
    hist = tl.sum(((expert[:, None] == e[None, :]) & mine[:, None]).to(tl.int32), axis=0)
    tl.store(scratch_ptr + (slot * (num_chunks + 2) + c) * E_P2 + e, hist)
    # this program's stripe of the slot row starts as padding; scatter overwrites the real pairs
    row = sorted_ptr + slot.to(tl.int64) * stride_sl
    for col0 in range(c * stripe, c * stripe + stripe, FILL):
        cols = col0 + tl.arange(0, FILL)
        tl.store(row + cols * stride_sp, tl.zeros((FILL,), tl.int32) + num_routed,
                 mask=(cols < c * stripe + stripe) & (cols < padded_len))


@triton.jit(do_not_specialize=["num_chunks"])
def align_layout_kernel(scratch_ptr, ntpp_ptr, num_chunks, stride_n,
                        BLOCK_M: tl.constexpr, E_P2: tl.constexpr, CHUNK_TILE: tl.constexpr):
    slot = tl.program_id(0)
    e = tl.arange(0, E_P2)
    rows = tl.arange(0, CHUNK_TILE)
    base = scratch_ptr + slot * (num_chunks + 2) * E_P2
    total = tl.zeros((E_P2,), tl.int32)
    for c0 in range(0, num_chunks, CHUNK_TILE):
        ptrs = base + (c0 + rows)[:, None] * E_P2 + e[None, :]
        inside = (c0 + rows)[:, None] < num_chunks
        hist = tl.load(ptrs, mask=inside, other=0)
        tl.store(ptrs, tl.cumsum(hist, axis=0) - hist + total[None, :], mask=inside)
        total += tl.sum(hist, axis=0)
    padded = (total + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    end = tl.cumsum(padded, axis=0)
    tl.store(base + num_chunks * E_P2 + e, end - padded)
    tl.store(base + (num_chunks + 1) * E_P2 + e, end)
    tl.store(ntpp_ptr + slot * stride_n, tl.sum(padded, axis=0))


@triton.jit(do_not_specialize=["num_routed", "top_k", "num_experts", "num_chunks", "num_blocks", "block_stripe"])
def align_scatter_kernel(topk_ids_ptr, token_lora_ptr, scratch_ptr, sorted_ptr, expert_ids_ptr,
                         num_routed, top_k, num_experts, num_chunks, num_blocks, block_stripe,
                         stride_im, stride_ik, stride_lora, stride_sl, stride_sp, stride_el, stride_eb,
                         CHUNK: tl.constexpr, E_P2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_TILE: tl.constexpr):
    c = tl.program_id(0)
    slot = tl.program_id(1)
    i = tl.arange(0, CHUNK)
    f = c * CHUNK + i
    expert, mine = _pairs_of_slot(topk_ids_ptr, token_lora_ptr, f, slot, num_routed, top_k, num_experts,
                                  stride_im, stride_ik, stride_lora)
    same_before = (expert[:, None] == expert[None, :]) & mine[None, :] & (i[None, :] < i[:, None])
    rank = tl.sum(same_before.to(tl.int32), axis=1)
    base = scratch_ptr + slot * (num_chunks + 2) * E_P2
    e = tl.where(mine, expert, 0)
    earlier = tl.load(base + c * E_P2 + e, mask=mine, other=0)
    start = tl.load(base + num_chunks * E_P2 + e, mask=mine, other=0)
    pos = start + earlier + rank
    tl.store(sorted_ptr + slot.to(tl.int64) * stride_sl + pos * stride_sp, f, mask=mine)
    # this program's stripe of expert_ids: block b belongs to the first expert whose padded group ends after it
    block_end = tl.load(base + (num_chunks + 1) * E_P2 + tl.arange(0, E_P2)) // BLOCK_M
    used = tl.max(block_end, axis=0)
    for b0 in range(c * block_stripe, c * block_stripe + block_stripe, BLOCK_TILE):
        b = b0 + tl.arange(0, BLOCK_TILE)
        owner = tl.sum((block_end[None, :] <= b[:, None]).to(tl.int32), axis=1)
        tl.store(expert_ids_ptr + slot.to(tl.int64) * stride_el + b * stride_eb, tl.where(b < used, owner, -1),
                 mask=(b < c * block_stripe + block_stripe) & (b < num_blocks))
