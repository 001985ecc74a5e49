"""Device code only: the grouped LoRA matmul used by both shrink and expand, unquantized and quantized.

The host layer (moe_lora.py) decides what x, w and out are for each stage:
    shrink: x = activations,           w = lora_a[s] (L, E, R, K), out = intermediate (S, M*k, R) fp32,
            every slice in one program (the S*R columns side by side)
    expand: x = intermediate[s] (fp32), w = lora_b[s] (L, E, N, R), out = out[..., offset:] (M, k, W'),
            one slice per program (grid axis 1)
QUANT > 0 (contract/quant.py): w holds fp8 / int8 codes with float32 scales; the quantized tile steps are the
helpers of moe_lora_quant_kernels.py. QUANT = 0 compiles exactly the unquantized kernel (the quantized arguments
are then None).
"""

import triton
import triton.language as tl

from . import runtime  # noqa: F401  sets TRITON_INTERPRET on GPU-less machines before @triton.jit below
from .moe_lora_quant_kernels import act_scale, code_dot, group_amax, quantize


@triton.jit
def _weight_base(w_table_ptr, idx, mask, w0_ptr, W_ALIGNED: tl.constexpr):
    """Base pointer of weight slice idx (a scalar or one per column), read from the pointer table."""
    base = tl.load(w_table_ptr + idx, mask=mask, other=0).to(tl.pointer_type(w0_ptr.dtype.element_ty))
    if W_ALIGNED:  # the host checked every slice: lets the weight loads be 16 bytes wide
        base = tl.multiple_of(base, 16)
    return base


# Token counts change with every batch: not specialising them (nor the expert_ids row stride, P / BLOCK_M,
# which moves with them and is only read once per program) avoids a recompile per divisibility class.
# N and K stay specialised like the strides: the boundary masks `offs < N` and `offs_k < K - ...` are then
# known constant over 16 lanes when N, K are multiples of 16, which is what lets loads and stores be 16
# bytes wide (unspecialised, every masked access was split into one-element accesses).
@triton.jit(do_not_specialize=["num_routed", "top_k", "row_div", "num_pid_m", "num_slot_ids", "stride_expert_l"])
def moe_lora_matmul_kernel(
    # pointers
    x_ptr,  # rows of the left operand, row r of slice s at x_ptr + s*stride_xs + r*stride_xm
    w_table_ptr,  # (S,) int64 data_ptr()s of the per-slice weights, each (L, E, N, K)
    w0_ptr,  # slice 0 of the weights: gives the table's element type
    out_ptr,  # element (s, f // top_k, f % top_k, n); see stride_o*
    topk_weights_ptr,  # (M, k) routed weights
    sorted_ids_ptr,  # (L, >=P) flat routed indices, sentinel num_routed
    expert_ids_ptr,  # (L, >=P/BLOCK_M) expert of each block, -1 unused
    num_tokens_post_padded_ptr,  # (L,) used length of each slot row
    slot_ids_ptr,  # (G,) slots to run, distinct; -1 = base model (skipped)
    adapter_enabled_ptr,  # (L,) 0/1
    # sizes
    num_routed,  # M * k, also the padding sentinel
    top_k,
    N,  # output columns of this program's row: S*R for shrink (all slices), N for expand (one slice)
    n_slice,  # columns per slice (R for shrink; only read with SLICES_IN_N)
    K,  # reduction length (K for shrink, R for expand)
    num_pid_m,  # BLOCK_M blocks covered by the grid, all slots together
    num_slot_ids,  # G
    row_div,  # x row of flat index f is f // row_div (k: per-token x, 1: per-routed x)
    # strides
    stride_xs,
    stride_xm,
    stride_xk,
    stride_wl,
    stride_we,
    stride_wn,
    stride_wk,
    stride_os,
    stride_om,
    stride_oj,
    stride_on,
    stride_twm,
    stride_twk,
    stride_sorted_l,
    stride_expert_l,
    # quantized (QUANT > 0; None otherwise)
    ws_table_ptr,  # (S,) int64 data_ptr()s of the per-slice weight scales, each (L, E, Gn, Gk) float32
    ws0_ptr,  # slice 0 of the scales
    x_scale_ptr,  # w8a8 with static activation scales: (1,) float32; else None (computed per row here)
    group_n,  # weight rows per scale
    group_k,  # weight (and activation) columns per scale
    stride_wsl,
    stride_wse,
    stride_wsn,
    stride_wsk,
    # meta-parameters
    MUL_ROUTED_WEIGHT: tl.constexpr,
    ACCUMULATE: tl.constexpr,  # out += result (expand) instead of out = result (shrink)
    MASK_K: tl.constexpr,  # False only in the k-tail-unmasked mutant
    UPCAST: tl.constexpr,  # dot in fp32 (bf16 under an unpatched Triton interpreter, whose bf16 dot is wrong)
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs: no silent tf32
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
    N_TILES: tl.constexpr,  # BLOCK_N tiles per program, side by side
    W_ALIGNED: tl.constexpr,  # every weight slice starts on a 16-byte boundary
    SLICES_IN_N: tl.constexpr,  # column n is column n % n_slice of slice n // n_slice (grid axis 1 is 1)
    G_P2: tl.constexpr,  # next power of two >= G
    FULL_LAST_GROUP: tl.constexpr = False,  # True only in the grouped-tail-full mutant
    QUANT: tl.constexpr = 0,  # 0: none; 1: fp8 w8a8; 2: int8 w8a8; 3: int8 w8a16
    ACT_QUANT: tl.constexpr = False,  # w8a8 (QUANT 1, 2): the activations are quantized here, tile by tile
    ACT_STATIC: tl.constexpr = False,  # w8a8: the activation scale is x_scale_ptr's, not computed per row
    ACT_TILE_GROUP: tl.constexpr = False,  # w8a8 dynamic: every K tile is exactly one activation scale group
    ROUND_X: tl.constexpr = False,  # w8a16 expand: the fp32 intermediate rounded to out's dtype before the dot
    NARROW_K: tl.constexpr = False,  # w8a8, BLOCK_K < 32: 8-bit codes multiplied as fp16 (exact products)
    # quantized seeded bugs (kernels.mutants); all False in the correct kernel
    SCALE_NEXT_BLOCK: tl.constexpr = False,  # weight scale of the next K-block
    CHANNEL_SCALE_BY_K: tl.constexpr = False,  # weight scale row indexed by k instead of n
    SCALE_SLOT0: tl.constexpr = False,  # weight scale of slot 0 whatever the slot
    ACT_SCALE_IGNORED: tl.constexpr = False,  # activation scale not applied
):
    """Grid: (SPLIT_K * num_pid_m * cdiv(N, BLOCK_N * N_TILES), S).

    The m axis runs over the used blocks of every enabled slot in slot-list order, so no program is spent
    on another slot's tokens, the base model or a disabled adapter (num_pid_m bounds their total).
    With SPLIT_K > 1 every program adds its K-chunk with tl.atomic_add: out must hold zeros (shrink)
    or the running output (expand) before the launch.
    """
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)

    # split-K outermost, then a GROUP_SIZE_M-swizzled (m, n) tile
    num_pid_n = tl.cdiv(N, BLOCK_N * N_TILES)
    num_tiles = num_pid_m * num_pid_n
    pid_sk = pid // num_tiles
    pid_mn = pid % num_tiles
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid_mn // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = GROUP_SIZE_M if FULL_LAST_GROUP else min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid_mn % num_pid_in_group) % group_size_m)
    pid_n = (pid_mn % num_pid_in_group) // group_size_m

    # which slot's row holds flat block pid_m: prefix sums of the used blocks over the slot list
    g = tl.arange(0, G_P2)
    slots = tl.load(slot_ids_ptr + g, mask=g < num_slot_ids, other=-1)
    live = slots >= 0
    live &= tl.load(adapter_enabled_ptr + slots, mask=live, other=0) != 0
    blocks = tl.where(live, tl.load(num_tokens_post_padded_ptr + slots, mask=live, other=0) // BLOCK_M, 0)
    ends = tl.cumsum(blocks, axis=0)
    idx = tl.sum((ends <= pid_m).to(tl.int32), axis=0)
    if idx >= num_slot_ids:
        return
    slot = tl.sum(tl.where(g == idx, slots, 0), axis=0)
    pid_m -= tl.sum(tl.where(g == idx, ends - blocks, 0), axis=0)

    slot64 = slot.to(tl.int64)
    expert = tl.load(expert_ids_ptr + slot64 * stride_expert_l + pid_m)
    if expert == -1:
        return

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_token = tl.load(sorted_ids_ptr + slot64 * stride_sorted_l + offs_m).to(tl.int64)
    token_mask = offs_token < num_routed
    token = offs_token // top_k
    slot_j = offs_token % top_k
    if MUL_ROUTED_WEIGHT:
        rw = tl.load(topk_weights_ptr + token * stride_twm + slot_j * stride_twk, mask=token_mask, other=0.0)
    offs_k = pid_sk * BLOCK_K + tl.arange(0, BLOCK_K)
    x_rows = x_ptr + pid_s * stride_xs + (offs_token // row_div)[:, None] * stride_xm
    w_off = slot64 * stride_wl + expert.to(tl.int64) * stride_we
    if not SLICES_IN_N:
        w_slice = _weight_base(w_table_ptr, pid_s, pid_s >= 0, w0_ptr, W_ALIGNED) + w_off
    if QUANT != 0:
        ws_off = (0 if SCALE_SLOT0 else slot64) * stride_wsl + expert.to(tl.int64) * stride_wse
        if not SLICES_IN_N:
            ws_slice = _weight_base(ws_table_ptr, pid_s, pid_s >= 0, ws0_ptr, False) + ws_off
    if ACT_QUANT and ACT_STATIC:
        sx = tl.load(x_scale_ptr + tl.zeros((BLOCK_M,), dtype=tl.int32))
    out_rows = out_ptr + pid_s * stride_os + token[:, None] * stride_om + slot_j[:, None] * stride_oj

    # N_TILES consecutive BLOCK_N tiles per program: the set-up above is paid once, and expand reads the
    # running output of the next tile before it stores this one, so that read's latency is hidden.
    offs_n = pid_n * (N_TILES * BLOCK_N) + tl.arange(0, BLOCK_N)
    tl.static_assert(not (ACCUMULATE and SLICES_IN_N), "expand runs one slice per program")
    if ACCUMULATE and SPLIT_K == 1:
        prev = tl.load(
            out_rows + offs_n[None, :] * stride_on, mask=token_mask[:, None] & (offs_n < N)[None, :], other=0.0
        )
    else:
        prev = tl.zeros((BLOCK_M, BLOCK_N), dtype=out_ptr.dtype.element_ty)
    for t in range(N_TILES):
        n_mask = offs_n < N
        if SLICES_IN_N:  # shrink: the columns of every slice side by side, so one read of x serves them all
            col_slice = offs_n // n_slice
            col = offs_n % n_slice
            w_cols = _weight_base(w_table_ptr, col_slice, n_mask, w0_ptr, W_ALIGNED) + w_off
            w_ptrs = w_cols[None, :] + offs_k[:, None] * stride_wk + col[None, :] * stride_wn
            out_ptrs = out_rows + col_slice[None, :] * stride_os + col[None, :] * stride_on
            if QUANT != 0:
                ws_cols = _weight_base(ws_table_ptr, col_slice, n_mask, ws0_ptr, False) + ws_off
        else:
            w_ptrs = w_slice + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
            out_ptrs = out_rows + offs_n[None, :] * stride_on
            if QUANT != 0:
                col = offs_n
                ws_cols = ws_slice + offs_n * 0
        x_ptrs = x_rows + offs_k[None, :] * stride_xk
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if ACT_QUANT and not ACT_STATIC and not ACT_TILE_GROUP:
            sx = tl.zeros((BLOCK_M,), dtype=tl.float32)
            kb_prev = pid_sk * 0 - 1  # the K-group sx belongs to
        for kk in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
            k_left = K - kk * BLOCK_K * SPLIT_K
            if MASK_K:
                a = tl.load(x_ptrs, mask=token_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
                b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & n_mask[None, :], other=0.0)
            else:
                a = tl.load(x_ptrs, mask=token_mask[:, None], other=0.0)
                b = tl.load(w_ptrs, mask=n_mask[None, :], other=0.0)
            if QUANT == 0:
                if UPCAST:
                    acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc, input_precision="ieee")
                else:
                    acc = tl.dot(a.to(b.dtype), b, acc=acc, input_precision=DOT_PRECISION)
            else:
                k0 = kk * BLOCK_K * SPLIT_K + pid_sk * BLOCK_K
                kb = k0 // group_k  # the tile's scale group along K (weights and activations)
                if ACT_QUANT:  # quantize the activation tile by its row's (K-group's) scale
                    if not ACT_STATIC:
                        if ACT_TILE_GROUP:
                            sx = act_scale(tl.max(tl.abs(a.to(tl.float32)), axis=1), QUANT)
                        else:
                            if kb != kb_prev:  # a new K-group: its scale from the whole group
                                start = kb * group_k
                                stop = tl.minimum(start + group_k, K)
                                amax = group_amax(x_rows, stride_xk, start, stop, token_mask, BLOCK_M, BLOCK_K)
                                sx = act_scale(amax, QUANT)
                            kb_prev = kb
                    a = quantize(a, sx, QUANT)
                elif ROUND_X:
                    a = a.to(out_ptr.dtype.element_ty)
                part = code_dot(a, b, QUANT, NARROW_K, UPCAST, DOT_PRECISION)
                kw = kb + 1 if SCALE_NEXT_BLOCK else kb
                scale_row = (k0 + tl.arange(0, BLOCK_N)) // group_n if CHANNEL_SCALE_BY_K else col // group_n
                # a split-K program's tile may start past K (all of it masked): its scale group does not exist
                in_k = (tl.zeros((BLOCK_N,), dtype=tl.int32) + k0) < K
                sw = tl.load(ws_cols + scale_row * stride_wsn + kw * stride_wsk, mask=n_mask & in_k, other=0.0)
                if ACT_QUANT and not ACT_SCALE_IGNORED:
                    part = part * sx[:, None]
                acc += part * sw[None, :]
            x_ptrs += BLOCK_K * SPLIT_K * stride_xk
            w_ptrs += BLOCK_K * SPLIT_K * stride_wk
        if MUL_ROUTED_WEIGHT:
            acc = acc * rw.to(tl.float32)[:, None]
        out_mask = token_mask[:, None] & n_mask[None, :]
        if SPLIT_K > 1:
            tl.atomic_add(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
        elif ACCUMULATE:
            total = (prev.to(tl.float32) + acc).to(out_ptr.dtype.element_ty)
            if N_TILES > 1:  # the next tile's running output, read before this store
                next_n = offs_n + BLOCK_N
                prev = tl.load(
                    out_rows + next_n[None, :] * stride_on,
                    other=0.0,
                    mask=token_mask[:, None] & ((next_n < N) & (t + 1 < N_TILES))[None, :],
                )
            tl.store(out_ptrs, total, mask=out_mask)
        else:
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
        offs_n += BLOCK_N
