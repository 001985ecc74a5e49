"""Our own small Triton implementation of the op in upstream calling conventions, for testing the adapters.

Written for this project (no upstream code). One kernel serves both stages, as upstream's does: a program
takes one BLOCK_M block of one slot's sorted pairs (one expert) and one BLOCK_N tile of the output, walks the
reduction in BLOCK_K chunks (every SPLIT_K-th chunk when split), and stores or atomically adds its tile into a
zeroed fp32 buffer. The grid is (programs over blocks x tiles [x split_k], slices, slot-list entries), and
each slot-list entry is read from `lora_ids` (-1 = no program work), exactly the structure whose grid bugs
the fuzzer hunts.

The tiles are upcast to fp32 before the product (exact for fp16/bf16 inputs, and it keeps Triton's
interpreter away from its wrong bf16 dot), and every atomic add goes into an fp32 buffer (the interpreter has
no bf16 atomic add), so the fakes are correct for all three dtypes on CPU and GPU. Blocks smaller than 16
(SGLang's shrink BLOCK_N for R < 16) use a broadcast product instead of tl.dot.

`fused_convention(expand_grid_covers_split_k)` returns upstream's fused function (SGLang's and the older
vLLM's `_fused_moe_lora` signature); with False the expand grid is not multiplied by split_k, the
`expand-splitk-grid` bug of SPEC §4: only 1/split_k of the expand programs run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _stage_kernel(
    # pointers
    a_ptr,  # shrink: x (M or M*k, K); expand: the fp32 intermediate (S, M*k, R)
    b0_ptr,
    b1_ptr,  # the weights of slice 0 and slice 1: (L, E, N, K) as (L, E, out, reduction)
    c_ptr,  # zeroed fp32 (S, M*k, N)
    w_ptr,  # topk_weights (M, k), any strides
    sorted_ptr,
    expert_ptr,
    ntp_ptr,
    lora_ids_ptr,
    enabled_ptr,
    # sizes
    N,
    K,
    EM,
    num_valid,
    a_row_div,
    top_k,
    # strides
    stride_as,
    stride_am,
    stride_ak,
    stride_bl,
    stride_be,
    stride_bn,
    stride_bk,
    stride_cs,
    stride_cm,
    stride_cn,
    stride_wm,
    stride_wk,
    stride_sorted,
    stride_expert,
    # meta-parameters
    MUL_ROUTED_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    SPLIT_K: tl.constexpr,
    USE_DOT: tl.constexpr,
):
    """Grid: (split_k * cdiv(EM, BLOCK_M) * cdiv(N, BLOCK_N), S, len(slot programs))."""
    pid = tl.program_id(axis=0)
    slice_id = tl.program_id(axis=1)
    lora_id = tl.load(lora_ids_ptr + tl.program_id(axis=2))
    if lora_id < 0:
        return
    if tl.load(enabled_ptr + lora_id) == 0:
        return
    pid_sk = pid % SPLIT_K
    pid_mn = pid // SPLIT_K
    num_pid_m = tl.cdiv(EM, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    in_group = GROUP_SIZE_M * num_pid_n
    first_m = (pid_mn // in_group) * GROUP_SIZE_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_SIZE_M)
    pid_m = first_m + (pid_mn % in_group) % group_rows
    pid_n = (pid_mn % in_group) // group_rows
    if pid_m * BLOCK_M >= tl.load(ntp_ptr + lora_id):
        return
    expert = tl.load(expert_ptr + lora_id * stride_expert + pid_m)
    if expert < 0:
        return

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_ptr + lora_id * stride_sorted + offs_m)  # flat pair indices; padding = num_valid
    live = pairs < num_valid
    pairs = tl.where(live, pairs, 0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if slice_id == 0:
        b_base = b0_ptr
    else:
        b_base = b1_ptr
    a_rows = a_ptr + slice_id * stride_as + (pairs // a_row_div)[:, None] * stride_am
    b_cols = b_base + lora_id * stride_bl + expert * stride_be + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for chunk in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        offs_k = (chunk * SPLIT_K + pid_sk) * BLOCK_K + tl.arange(0, BLOCK_K)
        a = tl.load(a_rows + offs_k[None, :] * stride_ak, mask=live[:, None] & (offs_k[None, :] < K), other=0.0)
        b = tl.load(b_cols + offs_k[:, None] * stride_bk, mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        a = a.to(tl.float32)
        b = b.to(tl.float32)
        if USE_DOT:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    if MUL_ROUTED_WEIGHT:
        w = tl.load(w_ptr + (pairs // top_k) * stride_wm + (pairs % top_k) * stride_wk, mask=live, other=0.0)
        acc = acc * w.to(tl.float32)[:, None]
    c_ptrs = c_ptr + slice_id * stride_cs + pairs[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = live[:, None] & (offs_n[None, :] < N)
    if SPLIT_K == 1:
        tl.store(c_ptrs, acc, mask=c_mask)
    else:
        tl.atomic_add(c_ptrs, acc, mask=c_mask)


def launch_stage(
    a,
    a_slice_stride: int,
    weights,
    c,
    topk_weights,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    lora_ids,
    slot_programs: int,
    adapter_enabled,
    *,
    a_row_div: int,
    top_k: int,
    mul_routed_weight: bool,
    block_size_m: int,
    block_size_n: int,
    block_size_k: int,
    group_size_m: int,
    num_warps: int,
    num_stages: int,
    split_k: int,
    grid_split_k: int,
) -> None:
    """One stage: c[s, f, :] (+)= weights[s][l, e] @ a_row(f) for the listed pairs; c is zeroed fp32."""
    num_valid, n_dim = c.shape[1], c.shape[2]
    k_dim = weights[0].shape[3]
    em = sorted_token_ids.shape[1]
    if num_valid == 0 or em == 0 or slot_programs == 0:
        return
    w0 = weights[0]
    w1 = weights[1] if len(weights) > 1 else weights[0]
    if w1.stride() != w0.stride():
        raise NotImplementedError("the fake kernel needs the same strides for every slice's weights")
    grid = (
        grid_split_k * triton.cdiv(em, block_size_m) * triton.cdiv(n_dim, block_size_n),
        len(weights),
        slot_programs,
    )
    _stage_kernel[grid](
        a,
        w0,
        w1,
        c,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        lora_ids,
        adapter_enabled,
        n_dim,
        k_dim,
        em,
        num_valid,
        a_row_div,
        top_k,
        a_slice_stride,
        a.stride(0),
        a.stride(1),
        w0.stride(0),
        w0.stride(1),
        w0.stride(2),
        w0.stride(3),
        c.stride(0),
        c.stride(1),
        c.stride(2),
        topk_weights.stride(0),
        topk_weights.stride(1),
        sorted_token_ids.stride(0),
        expert_ids.stride(0),
        MUL_ROUTED_WEIGHT=mul_routed_weight,
        BLOCK_M=block_size_m,
        BLOCK_N=block_size_n,
        BLOCK_K=block_size_k,
        GROUP_SIZE_M=group_size_m,
        SPLIT_K=split_k,
        USE_DOT=min(block_size_m, block_size_n, block_size_k) >= 16,
        num_warps=num_warps,
        num_stages=num_stages,
    )


def run_fused(
    output,
    x,
    lora_a_stacked,
    lora_b_stacked,
    topk_weights,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    lora_ids,
    slot_programs: int,
    adapter_enabled,
    shrink: dict,
    expand: dict,
    mul_routed_weight: bool,
    offset: int,
    expand_grid_covers_split_k: bool,
) -> None:
    """Shrink into an fp32 intermediate, expand into an fp32 buffer, add the buffer into output's columns."""
    m, top_k = topk_weights.shape
    slices, rank, n_dim = len(lora_a_stacked), lora_a_stacked[0].shape[2], lora_b_stacked[0].shape[2]
    per_routed = x.shape[0] == m * top_k  # the layout follows from the row count, independent of the weight
    common = (sorted_token_ids, expert_ids, num_tokens_post_padded, lora_ids, slot_programs, adapter_enabled)
    intermediate = torch.zeros((slices, m * top_k, rank), dtype=torch.float32, device=x.device)
    launch_stage(
        x,
        0,
        lora_a_stacked,
        intermediate,
        topk_weights,
        *common,
        a_row_div=1 if per_routed else top_k,
        top_k=top_k,
        mul_routed_weight=False,
        grid_split_k=shrink["split_k"],
        **shrink,
    )
    delta = torch.zeros((slices, m * top_k, n_dim), dtype=torch.float32, device=x.device)
    launch_stage(
        intermediate[0] if slices else intermediate,
        intermediate.stride(0),
        lora_b_stacked,
        delta,
        topk_weights,
        *common,
        a_row_div=1,
        top_k=top_k,
        mul_routed_weight=mul_routed_weight,
        grid_split_k=expand["split_k"] if expand_grid_covers_split_k else 1,
        **expand,
    )
    for s in range(slices):  # untouched pairs add an exact zero: their elements keep their bits
        output[:, :, offset + s * n_dim : offset + (s + 1) * n_dim] += delta[s].view(m, top_k, n_dim)


def stage(prefix: str, values: dict) -> dict:
    """The seven launch arguments of one stage from keywords named `<prefix>_block_size_m` and so on."""
    names = ("block_size_m", "block_size_n", "block_size_k", "group_size_m", "num_warps", "num_stages", "split_k")
    return {n: values[f"{prefix}_{n}"] for n in names}


def fused_convention(expand_grid_covers_split_k: bool, slot_programs: str = "lora_ids"):
    """Upstream's fused entry point (SGLang `_fused_moe_lora`; vLLM before token_lora_mapping was added):
    12 leading positional arguments, 7 launch arguments per stage, then the flags. The grid's slot axis has
    one program per entry of lora_ids (slot_programs="lora_ids") or one per slot ("max_loras", as SGLang:
    lora_a_stacked[0].shape[0] programs reading lora_ids[0..L-1])."""
    if slot_programs not in ("lora_ids", "max_loras"):
        raise ValueError(f"slot_programs: must be 'lora_ids' or 'max_loras' (got {slot_programs!r})")

    def _fused_moe_lora(
        output,
        qcurr_hidden_states,
        lora_a_stacked,
        lora_b_stacked,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        max_lora_rank,
        top_k_num,
        lora_ids,
        adapter_enabled,
        shrink_block_size_m,
        shrink_block_size_n,
        shrink_block_size_k,
        shrink_group_size_m,
        shrink_num_warps,
        shrink_num_stages,
        shrink_split_k,
        expand_block_size_m,
        expand_block_size_n,
        expand_block_size_k,
        expand_group_size_m,
        expand_num_warps,
        expand_num_stages,
        expand_split_k,
        mul_routed_weight=False,
        fully_sharded=False,
        offset=0,
    ):
        del fully_sharded  # one tensor-parallel rank: a fully sharded layer computes the same
        values = locals()
        programs = lora_ids.shape[0] if slot_programs == "lora_ids" else lora_a_stacked[0].shape[0]
        run_fused(
            output,
            qcurr_hidden_states,
            lora_a_stacked,
            lora_b_stacked,
            topk_weights,
            sorted_token_ids,
            expert_ids,
            num_tokens_post_padded,
            lora_ids,
            programs,
            adapter_enabled,
            stage("shrink", values),
            stage("expand", values),
            mul_routed_weight,
            offset,
            expand_grid_covers_split_k,
        )

    return _fused_moe_lora


def vllm_fused_convention(expand_grid_covers_split_k: bool):
    """vLLM's current fused entry point: token_lora_mapping after the align buffers, num_active_loras (an int
    or a one-element CPU tensor) after lora_ids; the grid's slot axis has num_active_loras programs, each
    reading lora_ids[i] (vLLM pads lora_ids with -1 to L + 1 entries)."""

    def _fused_moe_lora(
        output,
        qcurr_hidden_states,
        lora_a_stacked,
        lora_b_stacked,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        token_lora_mapping,
        max_lora_rank,
        top_k_num,
        lora_ids,
        num_active_loras,
        adapter_enabled,
        shrink_block_size_m,
        shrink_block_size_n,
        shrink_block_size_k,
        shrink_group_size_m,
        shrink_num_warps,
        shrink_num_stages,
        shrink_split_k,
        expand_block_size_m,
        expand_block_size_n,
        expand_block_size_k,
        expand_group_size_m,
        expand_num_warps,
        expand_num_stages,
        expand_split_k,
        mul_routed_weight=False,
        fully_sharded=False,
        offset=0,
    ):
        del fully_sharded  # one tensor-parallel rank: a fully sharded layer computes the same
        values = locals()
        programs = int(num_active_loras)
        if not 0 <= programs <= lora_ids.shape[0]:
            raise ValueError(f"num_active_loras={programs}: must lie in [0, len(lora_ids)={lora_ids.shape[0]}]")
        run_fused(
            output,
            qcurr_hidden_states,
            lora_a_stacked,
            lora_b_stacked,
            topk_weights,
            sorted_token_ids,
            expert_ids,
            num_tokens_post_padded,
            lora_ids,
            programs,
            adapter_enabled,
            stage("shrink", values),
            stage("expand", values),
            mul_routed_weight,
            offset,
            expand_grid_covers_split_k,
        )

    return _fused_moe_lora
