"""Host layer of the quantized fused MoE LoRA op (contract/quant.py): check, allocate, quantize, launch.

Same pipeline as moe_lora.py (align, shrink into an fp32 intermediate, expand into `out`), with lora_a / lora_b
holding fp8 or int8 codes and float32 scales. For w8a8 the activations are quantized before each stage (x
before shrink, the intermediate before expand) by contract.quant.quantize_activation, so a stage's dot is one of
codes, scaled once per K tile. With block scales BLOCK_K is clamped to block_k (each K tile in one scale group).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
from moe_lora_fuzz.contract import row_divisor
from moe_lora_fuzz.contract.quant import (
    ACT_SCALES,
    QUANT_SCHEMES,
    SCALE_GROUPS,
    QuantArgs,
    act_group,
    code_dtype,
    quantize_activation,
    quantizes_activations,
    scale_shape,
)
from triton.runtime.errors import OutOfResources

from .align import AlignBuffers, moe_lora_align_block_size
from .config import MoeLoraConfig, TileConfig, default_config
from .moe_lora import (
    MoeLoraCall,
    Workspace,
    _check_workspace,
    _need,
    _pointer_table,
    check_config,
    default_slot_ids,
    interpreter_bf16_ok,
    max_used_blocks,
    prepare,
)
from .moe_lora_quant_kernels import moe_lora_quant_matmul_kernel
from .mutants import NO_DEVIATION, Deviation
from .runtime import INTERPRET


def check_quant(call: MoeLoraCall, q) -> None:
    """The QuantArgs against the call: scheme, group, block sizes and every scale's shape, dtype and device."""
    _need(isinstance(q, QuantArgs), lambda: f"quant: expected contract.QuantArgs, got {type(q).__name__}", TypeError)
    _need(q.scheme in QUANT_SCHEMES[1:], lambda: f"quant.scheme: {q.scheme!r} is not one of {QUANT_SCHEMES[1:]}")
    _need(q.group in SCALE_GROUPS, lambda: f"quant.group: {q.group!r} is not one of {SCALE_GROUPS}")
    _need(q.act in ACT_SCALES, lambda: f"quant.act: {q.act!r} is not one of {ACT_SCALES}")
    for name in ("block_n", "block_k"):
        v = getattr(q, name)
        _need(
            type(v) is int and 16 <= v and v & (v - 1) == 0,
            lambda name=name, v=v: f"quant.{name}: must be a power of two >= 16 (got {v!r})",
        )
    dev = call.x.device
    lead = (call.num_slots, call.num_experts)
    for name, scales, n, k in (
        ("lora_a_scale", q.lora_a_scale, call.rank, call.k_dim),
        ("lora_b_scale", q.lora_b_scale, call.n_dim, call.rank),
    ):
        want = scale_shape(q.group, lead, n, k, q.block_n, q.block_k)
        _need(
            isinstance(scales, (list, tuple)) and len(scales) == call.num_slices,
            lambda name=name: f"quant.{name}: expected a list of {call.num_slices} per-slice tensors",
            TypeError,
        )
        for i, s in enumerate(scales):
            _need(
                isinstance(s, torch.Tensor) and s.dtype == torch.float32 and s.device == dev,
                lambda name=name, i=i: f"quant.{name}[{i}]: expected a float32 tensor on {dev}",
                TypeError,
            )
            _need(
                tuple(s.shape) == want and s.stride() == scales[0].stride(),
                lambda name=name, i=i, s=s, want=want: (
                    f"quant.{name}[{i}]: shape {tuple(s.shape)} must be {want} for {q.group} scales, strides as [0]"
                ),
            )
    if quantizes_activations(q.scheme) and q.act == "static":
        for name in ("shrink_act_scale", "expand_act_scale"):
            s = getattr(q, name)
            _need(
                isinstance(s, torch.Tensor) and s.numel() == 1 and s.dtype == torch.float32 and s.device == dev,
                lambda name=name: f"quant.{name}: static scales need a one-element float32 tensor on {dev}",
                TypeError,
            )


def _clamped(tile: TileConfig, q) -> TileConfig:
    """BLOCK_K no larger than block_k for block scales (both powers of two: a K tile then lies in one group)."""
    if q.group == "block" and tile.block_k > q.block_k:
        return dataclasses.replace(tile, block_k=q.block_k)
    return tile


def _launch(
    call: MoeLoraCall,
    q,
    stage: str,
    x,
    x_strides,
    x_scale,
    xs_strides,
    weights,
    scales,
    out,
    out_strides,
    align: AlignBuffers,
    slot_ids,
    tile: TileConfig,
    block_m: int,
    *,
    row_div: int,
    mul_routed_weight: bool,
    accumulate: bool,
    dev: Deviation,
) -> None:
    shrink = stage == "shrink"
    k_dim, n_dim = (call.k_dim, call.rank * call.num_slices) if shrink else (call.rank, call.n_dim)
    group_n, group_k = q.groups(call.rank, call.k_dim) if shrink else q.groups(call.n_dim, call.rank)
    tile = _clamped(tile, q)
    sorted_ids, expert_ids = align.sorted_token_ids, align.expert_ids
    num_slot_ids = slot_ids.shape[0]
    num_pid_m = min(
        num_slot_ids * expert_ids.shape[1], max_used_blocks(call.num_routed, call.num_experts * call.num_slots, block_m)
    )
    grid = (
        tile.split_k * num_pid_m * triton.cdiv(n_dim, tile.block_n * tile.n_tiles),
        1 if shrink else call.num_slices,
    )
    if min(grid) == 0:
        return
    w0, s0 = weights[0], scales[0]
    mode = {"fp8_w8a8": 0, "int8_w8a8": 1, "int8_w8a16": 2}[q.scheme]
    act_dtype = call.x.dtype
    try:
        moe_lora_quant_matmul_kernel[grid](
            x,
            s0 if x_scale is None else x_scale,
            _pointer_table(weights),
            w0,
            _pointer_table(scales),
            s0,
            out,
            call.topk_weights,
            sorted_ids,
            expert_ids,
            align.num_tokens_post_padded,
            slot_ids,
            call.adapter_enabled,
            call.num_routed,
            call.top_k,
            n_dim,
            call.rank if shrink else n_dim,
            k_dim,
            num_pid_m,
            num_slot_ids,
            row_div,
            group_n,
            group_k,
            *x_strides,
            *xs_strides,
            w0.stride(0),
            w0.stride(1),
            w0.stride(2),
            w0.stride(3),
            s0.stride(0),
            s0.stride(1),
            s0.stride(2),
            s0.stride(3),
            *out_strides,
            call.topk_weights.stride(0),
            call.topk_weights.stride(1),
            sorted_ids.stride(0),
            expert_ids.stride(0),
            MUL_ROUTED_WEIGHT=mul_routed_weight,
            ACCUMULATE=accumulate,
            DOT_MODE=mode,
            ROUND_X=mode == 2 and not shrink and act_dtype != torch.float32,
            UPCAST=INTERPRET and act_dtype == torch.bfloat16 and not interpreter_bf16_ok(),
            DOT_PRECISION="ieee" if act_dtype == torch.float32 else "tf32",
            BLOCK_M=block_m,
            BLOCK_N=tile.block_n,
            BLOCK_K=tile.block_k,
            GROUP_SIZE_M=tile.group_size_m,
            SPLIT_K=tile.split_k,
            N_TILES=tile.n_tiles,
            SLICES_IN_N=shrink,
            G_P2=triton.next_power_of_2(num_slot_ids),
            NARROW_K=tile.block_k < 32,
            SCALE_NEXT_BLOCK=dev.quant_scale_next_block,
            CHANNEL_SCALE_BY_K=dev.quant_channel_scale_by_k,
            SCALE_SLOT0=dev.quant_scale_slot0,
            ACT_SCALE_IGNORED=dev.quant_act_scale_ignored,
            num_warps=tile.num_warps,
            num_stages=tile.num_stages,
        )
    except OutOfResources as e:
        raise ValueError(f"config.{stage}: {e} (BLOCK_M={block_m}, {tile})") from None


def fused_moe_lora_quant(
    out,
    x,
    topk_ids,
    topk_weights,
    token_lora,
    adapter_enabled,
    lora_a,
    lora_b,
    quant,
    *,
    mul_routed_weight: bool,
    offset: int = 0,
    layout: str | None = None,
    config: MoeLoraConfig | None = None,
    workspace: Workspace | None = None,
    validate_ids: bool = False,
    deviation: Deviation = NO_DEVIATION,
) -> torch.Tensor:
    """fused_moe_lora with quant=QuantArgs (reached through it): lora_a / lora_b hold codes of quant.scheme."""
    _need(
        isinstance(quant, QuantArgs) and quant.scheme in QUANT_SCHEMES[1:],
        lambda: f"quant: expected a contract.QuantArgs of a scheme in {QUANT_SCHEMES[1:]}",
        TypeError,
    )
    call = prepare(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        mul_routed_weight=mul_routed_weight,
        offset=offset,
        layout=layout,
        validate_ids=validate_ids,
        weight_dtypes=(code_dtype(quant.scheme),),
    )
    check_quant(call, quant)
    if config is None:
        config = default_config(
            call.num_routed, call.rank, call.k_dim, call.n_dim, call.num_experts, call.num_slots, call.num_slices
        )
    check_config(call, config)
    ws = Workspace() if workspace is None else workspace
    _need(
        isinstance(ws, Workspace), lambda: f"workspace: expected kernels.Workspace, got {type(ws).__name__}", TypeError
    )
    _check_workspace(call, ws, config.block_m)
    if call.m == 0:
        return out
    dev = deviation
    align = moe_lora_align_block_size(
        topk_ids, token_lora, call.num_experts, call.num_slots, config.block_m, ws.align, config.align, dev
    )
    t = ws.intermediate
    if t is None:
        t = torch.empty((call.num_slices, call.num_routed, call.rank), dtype=torch.float32, device=x.device)
    slot_ids = default_slot_ids(call.num_slots, x.device)
    w8a8 = quantizes_activations(quant.scheme)
    static = quant.act == "static"

    # shrink: intermediate[s, f, :] = A[s][l, e] @ x[row(f)]
    if config.shrink.split_k > 1:
        t.zero_()
    xq, xs = call.x, None
    if w8a8:
        xq, xs = quantize_activation(
            call.x,
            quant.scheme,
            act_group(quant.group, call.k_dim, quant.block_k),
            quant.static("shrink") if static else None,
        )
    _launch(
        call,
        quant,
        "shrink",
        xq,
        (0, xq.stride(0), xq.stride(1)),
        xs,
        (0, 0, 0) if xs is None else (0, xs.stride(0), xs.stride(1)),
        call.lora_a,
        quant.lora_a_scale,
        t,
        (t.stride(0), t.stride(1) * call.top_k, t.stride(1), t.stride(2)),
        align,
        slot_ids,
        config.shrink,
        config.block_m,
        row_div=row_divisor(call.layout, call.top_k),
        mul_routed_weight=False,
        accumulate=False,
        dev=dev,
    )

    # expand: out[m, j, offset + s*N + n] += w? * B[s][l, e] @ intermediate[s, f]
    tq, ts = t, None
    if w8a8:
        flat = t.reshape(call.num_slices * call.num_routed, call.rank)
        tq, ts = quantize_activation(
            flat,
            quant.scheme,
            act_group(quant.group, call.rank, quant.block_k),
            quant.static("expand") if static else None,
        )
        tq = tq.view(call.num_slices, call.num_routed, call.rank)
        ts = ts.view(call.num_slices, call.num_routed, -1)
    cols = call.out[:, :, call.offset :]
    o = call.out
    _launch(
        call,
        quant,
        "expand",
        tq,
        (tq.stride(0), tq.stride(1), tq.stride(2)),
        ts,
        (0, 0, 0) if ts is None else (ts.stride(0), ts.stride(1), ts.stride(2)),
        call.lora_b,
        quant.lora_b_scale,
        cols,
        (call.n_dim * o.stride(2), o.stride(0), o.stride(1), o.stride(2)),
        align,
        slot_ids,
        config.expand,
        config.block_m,
        row_div=1,
        mul_routed_weight=call.mul_routed_weight,
        accumulate=True,
        dev=dev,
    )
    return out
