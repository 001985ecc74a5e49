"""Device code of align: three launches, no host synchronisation, deterministic output.

A routed pair's group is key = slot * E_P2 + expert; routed pairs are cut into chunks of CHUNK flat indices.
    count:   per chunk, the size of each group in it -> scratch row (and into totals, by atomic adds);
             also a stripe of sorted_ids filled with the sentinel
    layout:  per (slot, tile of E_TILE experts), exclusive scan of its columns over chunks (in place); the
             tile-0 program writes the slot's group starts and ends and num_tokens_post_padded; every
             program writes a stripe of the slot's expert_ids
    scatter: per chunk, each pair's position = group start + pairs of its group in earlier chunks + earlier
             pairs of its group in this chunk, so groups keep flat-index order
scratch is (num_chunks + 2, L * E_P2) int32: a row per chunk, then the group starts and ends of every slot.
totals (L * E_P2,) must hold zeros before the count launch (the host's one memset).
"""

import triton
import triton.language as tl

from . import runtime  # noqa: F401  sets TRITON_INTERPRET on GPU-less machines before @triton.jit below


@triton.jit
def _chunk_groups(
    topk_ids_ptr,
    token_lora_ptr,
    c,
    num_routed,
    top_k,
    num_experts,
    num_slots,
    stride_im,
    stride_ik,
    stride_lora,
    CHUNK: tl.constexpr,
    E_P2: tl.constexpr,
):
    """For the pairs of chunk c: flat index, slot, group key, whether the pair is aligned at all (slot in
    [0, L), expert in [0, E)), and how many pairs of its group in the chunk come before and after it."""
    i = tl.arange(0, CHUNK)
    f = c * CHUNK + i
    inside = f < num_routed
    token = f // top_k
    expert = tl.load(topk_ids_ptr + token * stride_im + (f % top_k) * stride_ik, mask=inside, other=-1)
    expert = expert.to(tl.int32)
    slot = tl.load(token_lora_ptr + token * stride_lora, mask=inside, other=-1).to(tl.int32)
    valid = inside & (slot >= 0) & (slot < num_slots) & (expert >= 0) & (expert < num_experts)
    key = tl.where(valid, slot * E_P2 + expert, -1)
    same_before = (key[:, None] == key[None, :]) & valid[None, :] & (i[None, :] < i[:, None])
    same_before = same_before.to(tl.int32)
    return f, slot, tl.where(valid, key, 0), valid, tl.sum(same_before, axis=1), tl.sum(same_before, axis=0)


@triton.jit(do_not_specialize=["num_routed", "top_k", "num_experts", "num_slots", "padded_len", "stripe"])
def align_count_kernel(
    topk_ids_ptr,
    token_lora_ptr,
    scratch_ptr,
    totals_ptr,
    sorted_ptr,
    num_routed,
    top_k,
    num_experts,
    num_slots,
    padded_len,
    stripe,
    stride_im,
    stride_ik,
    stride_lora,
    stride_sl,
    stride_sp,
    CHUNK: tl.constexpr,
    E_P2: tl.constexpr,
    COLS_P2: tl.constexpr,
    FILL: tl.constexpr,
):
    c = tl.program_id(0)
    f, slot, key, valid, rank, after = _chunk_groups(
        topk_ids_ptr,
        token_lora_ptr,
        c,
        num_routed,
        top_k,
        num_experts,
        num_slots,
        stride_im,
        stride_ik,
        stride_lora,
        CHUNK,
        E_P2,
    )
    # the group size is the rank of its last pair plus one: zero the row, then write those
    cols = num_slots * E_P2
    row = scratch_ptr + c.to(tl.int64) * cols
    b = tl.arange(0, COLS_P2)
    tl.store(row + b, tl.zeros((COLS_P2,), tl.int32), mask=b < cols)
    last = valid & (after == 0)
    tl.debug_barrier()  # the zeros above are stored before the sizes below
    tl.store(row + key, rank + 1, mask=last)
    tl.atomic_add(totals_ptr + key, rank + 1, mask=last, sem="relaxed")
    # this program's stripe of the (L, P) sorted_ids starts as padding; scatter overwrites the real pairs
    for i0 in range(c * stripe, c * stripe + stripe, FILL):
        idx = i0 + tl.arange(0, FILL)
        s = idx // padded_len
        tl.store(
            sorted_ptr + s.to(tl.int64) * stride_sl + (idx - s * padded_len) * stride_sp,
            tl.zeros((FILL,), tl.int32) + num_routed,
            mask=(idx < c * stripe + stripe) & (idx < num_slots * padded_len),
        )


@triton.jit(do_not_specialize=["num_chunks", "num_blocks", "block_stripe", "stride_el"])  # all move with M*k
def align_layout_kernel(
    scratch_ptr,
    totals_ptr,
    expert_ids_ptr,
    ntpp_ptr,
    num_chunks,
    num_blocks,
    block_stripe,
    stride_el,
    stride_eb,
    stride_n,
    BLOCK_M: tl.constexpr,
    E_P2: tl.constexpr,
    E_TILE: tl.constexpr,
    CHUNK_TILE: tl.constexpr,
    BLOCK_TILE: tl.constexpr,
):
    slot = tl.program_id(0)
    tile = tl.program_id(1)
    cols = tl.num_programs(0) * E_P2
    e = tl.arange(0, E_P2)
    total = tl.load(totals_ptr + slot * E_P2 + e)
    padded = (total + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    end = tl.cumsum(padded, axis=0)
    if tile == 0:
        tl.store(scratch_ptr + num_chunks.to(tl.int64) * cols + slot * E_P2 + e, end - padded)
        tl.store(scratch_ptr + (num_chunks + 1).to(tl.int64) * cols + slot * E_P2 + e, end)
        tl.store(ntpp_ptr + slot * stride_n, tl.sum(padded, axis=0))
    # exclusive scan over chunks of this tile's columns
    col = slot * E_P2 + tile * E_TILE + tl.arange(0, E_TILE)
    rows = tl.arange(0, CHUNK_TILE)
    running = tl.zeros((E_TILE,), tl.int32)
    for c0 in range(0, num_chunks, CHUNK_TILE):
        ptrs = scratch_ptr + (c0 + rows).to(tl.int64)[:, None] * cols + col[None, :]
        inside = (c0 + rows)[:, None] < num_chunks
        hist = tl.load(ptrs, mask=inside, other=0)
        tl.store(ptrs, tl.cumsum(hist, axis=0) - hist + running[None, :], mask=inside)
        running += tl.sum(hist, axis=0)
    # this program's stripe of the slot's expert_ids: a block belongs to the first expert whose group ends after it
    block_end = end // BLOCK_M
    used = tl.sum(padded, axis=0) // BLOCK_M
    for b0 in range(tile * block_stripe, tile * block_stripe + block_stripe, BLOCK_TILE):
        b = b0 + tl.arange(0, BLOCK_TILE)
        owner = tl.sum((block_end[None, :] <= b[:, None]).to(tl.int32), axis=1)
        tl.store(
            expert_ids_ptr + slot.to(tl.int64) * stride_el + b * stride_eb,
            tl.where(b < used, owner, -1),
            mask=(b < tile * block_stripe + block_stripe) & (b < num_blocks),
        )


@triton.jit(do_not_specialize=["num_routed", "top_k", "num_experts", "num_slots", "num_chunks"])
def align_scatter_kernel(
    topk_ids_ptr,
    token_lora_ptr,
    scratch_ptr,
    sorted_ptr,
    num_routed,
    top_k,
    num_experts,
    num_slots,
    num_chunks,
    stride_im,
    stride_ik,
    stride_lora,
    stride_sl,
    stride_sp,
    CHUNK: tl.constexpr,
    E_P2: tl.constexpr,
):
    c = tl.program_id(0)
    f, slot, key, valid, rank, _ = _chunk_groups(
        topk_ids_ptr,
        token_lora_ptr,
        c,
        num_routed,
        top_k,
        num_experts,
        num_slots,
        stride_im,
        stride_ik,
        stride_lora,
        CHUNK,
        E_P2,
    )
    cols = num_slots * E_P2
    earlier = tl.load(scratch_ptr + c.to(tl.int64) * cols + key, mask=valid, other=0)
    start = tl.load(scratch_ptr + num_chunks.to(tl.int64) * cols + key, mask=valid, other=0)
    tl.store(sorted_ptr + slot.to(tl.int64) * stride_sl + (start + earlier + rank) * stride_sp, f, mask=valid)
