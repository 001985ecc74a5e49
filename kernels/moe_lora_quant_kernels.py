"""Device code only: the grouped LoRA matmul of the quantized op (contract/quant.py), for shrink and expand.

The host layer (moe_lora_quant.py) hands it, per stage:
    shrink: x = activations (w8a8: their codes, x_scale their scales), w = lora_a[s] codes, w_scale its scales,
            out = intermediate (S, M*k, R) fp32, every slice in one program (the S*R columns side by side)
    expand: x = intermediate (w8a8: its codes and scales; w8a16: fp32, rounded to the activation dtype here),
            w = lora_b[s] codes, out = out[..., offset:], one slice per program (grid axis 1)
Every BLOCK_K tile lies inside one scale group along K (the host clamps BLOCK_K to block_k for block scales), so
a tile's dot of codes is scaled once: acc += dot(x codes, w codes) * x_scale[row, kb] * w_scale[n // group_n, kb].
"""

import triton
import triton.language as tl

from . import runtime  # noqa: F401  sets TRITON_INTERPRET on GPU-less machines before @triton.jit below


@triton.jit
def _base(table_ptr, idx, mask, elem0_ptr):
    """Base pointer of slice idx (a scalar or one per column), read from a pointer table."""
    return tl.load(table_ptr + idx, mask=mask, other=0).to(tl.pointer_type(elem0_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["num_routed", "top_k", "row_div", "num_pid_m", "num_slot_ids", "stride_expert_l"])
def moe_lora_quant_matmul_kernel(
    # pointers
    x_ptr,  # activation rows (codes for w8a8), row r of slice s at x_ptr + s*stride_xs + r*stride_xm
    x_scale_ptr,  # activation scales (w8a8), (row, K-group) of slice s; unused otherwise
    w_table_ptr,  # (S,) int64 data_ptr()s of the per-slice weight codes, each (L, E, N, K)
    w0_ptr,  # slice 0 of the codes: gives the table's element type
    ws_table_ptr,  # (S,) int64 data_ptr()s of the per-slice weight scales, each (L, E, Gn, Gk) float32
    ws0_ptr,  # slice 0 of the scales
    out_ptr,  # element (s, f // top_k, f % top_k, n)
    topk_weights_ptr,  # (M, k)
    sorted_ids_ptr,  # (L, >=P)
    expert_ids_ptr,  # (L, >=P/BLOCK_M)
    num_tokens_post_padded_ptr,  # (L,)
    slot_ids_ptr,  # (G,)
    adapter_enabled_ptr,  # (L,)
    # sizes
    num_routed,
    top_k,
    N,  # output columns of this program's row: S*R for shrink (all slices), N for expand
    n_slice,  # columns per slice (R for shrink; only read with SLICES_IN_N)
    K,
    num_pid_m,
    num_slot_ids,
    row_div,
    group_n,  # weight rows per scale
    group_k,  # weight (and activation) columns per scale
    # strides
    stride_xs,
    stride_xm,
    stride_xk,
    stride_xss,
    stride_xsm,
    stride_xsk,
    stride_wl,
    stride_we,
    stride_wn,
    stride_wk,
    stride_wsl,
    stride_wse,
    stride_wsn,
    stride_wsk,
    stride_os,
    stride_om,
    stride_oj,
    stride_on,
    stride_twm,
    stride_twk,
    stride_sorted_l,
    stride_expert_l,
    # meta-parameters
    MUL_ROUTED_WEIGHT: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    DOT_MODE: tl.constexpr,  # 0: fp8 codes x fp8 codes; 1: int8 x int8 (int32 dot); 2: w8a16 (codes to x's dtype)
    ROUND_X: tl.constexpr,  # w8a16 expand: the fp32 intermediate rounded to out's dtype before the dot
    UPCAST: tl.constexpr,  # dot in fp32 (bf16 under an unpatched Triton interpreter)
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
    N_TILES: tl.constexpr,
    SLICES_IN_N: tl.constexpr,
    G_P2: tl.constexpr,
    NARROW_K: tl.constexpr = False,  # BLOCK_K < 32: 8-bit codes multiplied as fp16 (exact products, fp32 sums)
    # seeded bugs (kernels.mutants); all False in the correct kernel
    SCALE_NEXT_BLOCK: tl.constexpr = False,  # weight scale of the next K-block
    CHANNEL_SCALE_BY_K: tl.constexpr = False,  # weight scale row indexed by k instead of n
    SCALE_SLOT0: tl.constexpr = False,  # weight scale of slot 0 whatever the slot
    ACT_SCALE_IGNORED: tl.constexpr = False,  # activation scale not applied
):
    """Grid: (SPLIT_K * num_pid_m * cdiv(N, BLOCK_N * N_TILES), S). As moe_lora_matmul_kernel, plus the scales."""
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)

    num_pid_n = tl.cdiv(N, BLOCK_N * N_TILES)
    num_tiles = num_pid_m * num_pid_n
    pid_sk = pid // num_tiles
    pid_mn = pid % num_tiles
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid_mn // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid_mn % num_pid_in_group) % group_size_m)
    pid_n = (pid_mn % num_pid_in_group) // group_size_m

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
    x_row = offs_token // row_div
    x_rows = x_ptr + pid_s * stride_xs + x_row[:, None] * stride_xm
    xs_rows = x_scale_ptr + pid_s * stride_xss + x_row * stride_xsm
    expert64 = expert.to(tl.int64)
    w_off = slot64 * stride_wl + expert64 * stride_we
    ws_off = (0 if SCALE_SLOT0 else slot64) * stride_wsl + expert64 * stride_wse
    out_rows = out_ptr + pid_s * stride_os + token[:, None] * stride_om + slot_j[:, None] * stride_oj

    offs_n = pid_n * (N_TILES * BLOCK_N) + tl.arange(0, BLOCK_N)
    for _t in range(N_TILES):
        n_mask = offs_n < N
        if SLICES_IN_N:
            col_slice = offs_n // n_slice
            col = offs_n % n_slice
            w_cols = _base(w_table_ptr, col_slice, n_mask, w0_ptr) + w_off
            ws_cols = _base(ws_table_ptr, col_slice, n_mask, ws0_ptr) + ws_off
            w_ptrs = w_cols[None, :] + offs_k[:, None] * stride_wk + col[None, :] * stride_wn
            out_ptrs = out_rows + col_slice[None, :] * stride_os + col[None, :] * stride_on
        else:
            col = offs_n
            w_ptrs = _base(w_table_ptr, pid_s, pid_s >= 0, w0_ptr) + w_off
            w_ptrs = w_ptrs + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
            ws_cols = _base(ws_table_ptr, pid_s, pid_s >= 0, ws0_ptr) + ws_off + offs_n * 0
            out_ptrs = out_rows + offs_n[None, :] * stride_on
        x_ptrs = x_rows + offs_k[None, :] * stride_xk
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
            k0 = kk * BLOCK_K * SPLIT_K + pid_sk * BLOCK_K
            k_left = K - kk * BLOCK_K * SPLIT_K
            a = tl.load(x_ptrs, mask=token_mask[:, None] & (offs_k[None, :] < k_left), other=0.0)
            b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & n_mask[None, :], other=0.0)
            if DOT_MODE != 2 and NARROW_K:  # 8-bit tensor-core dots want K >= 32: fp16 holds every code exactly
                part = tl.dot(a.to(tl.float16), b.to(tl.float16))
            elif DOT_MODE == 1:
                part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
            elif DOT_MODE == 0:
                part = tl.dot(a, b)
            else:
                if ROUND_X:
                    a = a.to(out_ptr.dtype.element_ty)
                if UPCAST:
                    part = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                else:
                    part = tl.dot(a, b.to(a.dtype), input_precision=DOT_PRECISION)
            kb = k0 // group_k
            kw = kb + 1 if SCALE_NEXT_BLOCK else kb
            if CHANNEL_SCALE_BY_K:
                scale_row = (k0 + tl.arange(0, BLOCK_N)) // group_n
            else:
                scale_row = col // group_n
            # a split-K program's tile may start past K (all of it masked): its scale group does not exist
            in_k_n = (tl.zeros((BLOCK_N,), dtype=tl.int32) + k0) < K
            sw = tl.load(ws_cols + scale_row * stride_wsn + kw * stride_wsk, mask=n_mask & in_k_n, other=0.0)
            if DOT_MODE != 2 and not ACT_SCALE_IGNORED:
                in_k_m = (tl.zeros((BLOCK_M,), dtype=tl.int32) + k0) < K
                sx = tl.load(xs_rows + kb * stride_xsk, mask=token_mask & in_k_m, other=0.0)
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
            prev = tl.load(out_ptrs, mask=out_mask, other=0.0)
            tl.store(out_ptrs, (prev.to(tl.float32) + acc).to(out_ptr.dtype.element_ty), mask=out_mask)
        else:
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
        offs_n += BLOCK_N
