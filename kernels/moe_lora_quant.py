"""The quantized op's host parts (contract/quant.py): its checks and its kernel arguments. fused_moe_lora(quant=...)
runs the one pipeline of moe_lora.py (align, shrink into an fp32 intermediate, expand into `out`) with lora_a /
lora_b holding fp8 or int8 codes and float32 scales, through the one kernel (moe_lora_kernels.py, QUANT > 0).

For w8a8 the kernel quantizes the activations itself (x in shrink, the intermediate in expand), tile by tile, by
contract.quant.quantize_activation's rule: no launch, host op or buffer per call beyond the unquantized op's. With
block scales BLOCK_K is clamped to block_k (each K tile in one scale group).
"""

from __future__ import annotations

import dataclasses

import torch
from moe_lora_fuzz.contract.quant import (
    ACT_SCALES,
    QUANT_SCHEMES,
    SCALE_GROUPS,
    QuantArgs,
    code_dtype,
    quantizes_activations,
    scale_shape,
)

from .config import TileConfig
from .moe_lora import MoeLoraCall, _need, _pointer_table, interpreter_bf16_ok
from .mutants import Deviation

QUANT_CODES = {"fp8_w8a8": 1, "int8_w8a8": 2, "int8_w8a16": 3}  # the kernel's QUANT switch


def quant_weight_dtypes(q) -> tuple:
    """The dtype lora_a / lora_b must have under q (checked before anything else of the call)."""
    _need(
        isinstance(q, QuantArgs) and q.scheme in QUANT_SCHEMES[1:],
        lambda: f"quant: expected a contract.QuantArgs of a scheme in {QUANT_SCHEMES[1:]}",
        TypeError,
    )
    return (code_dtype(q.scheme),)


def check_quant(call: MoeLoraCall, q) -> None:
    """The QuantArgs against the call: scheme, group, block sizes and every scale's shape, dtype and device."""
    _need(isinstance(q, QuantArgs), lambda: f"quant: expected contract.QuantArgs, got {type(q).__name__}", TypeError)
    _need(q.scheme in QUANT_SCHEMES[1:], lambda: f"quant.scheme: {q.scheme!r} is not one of {QUANT_SCHEMES[1:]}")
    _need(q.group in SCALE_GROUPS, lambda: f"quant.group: {q.group!r} is not one of {SCALE_GROUPS}")
    _need(q.act in ACT_SCALES, lambda: f"quant.act: {q.act!r} is not one of {ACT_SCALES}")
    _need(
        q.scheme != "fp8_w8a8" or interpreter_bf16_ok(),  # the kernel quantizes activations to e4m3fn itself
        "quant.scheme: fp8_w8a8 on CPU needs the patched Triton interpreter (moe_lora_fuzz.fuzz.runtime.interpreter"
        ".install()): the plain interpreter's fp32 -> e4m3fn cast rounds wrongly",
    )
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


def quant_launch_args(call: MoeLoraCall, q, stage: str, tile: TileConfig, dev: Deviation) -> tuple:
    """(tile, the kernel's quantized keyword arguments) of one stage: weight scales, activation scale, switches."""
    shrink = stage == "shrink"
    k_dim = call.k_dim if shrink else call.rank
    group_n, group_k = q.groups(call.rank, call.k_dim) if shrink else q.groups(call.n_dim, call.rank)
    tile = _clamped(tile, q)
    scales = q.lora_a_scale if shrink else q.lora_b_scale
    s0 = scales[0]
    code = QUANT_CODES[q.scheme]
    w8a8 = code != 3
    static = w8a8 and q.act == "static"
    # every K tile is one whole activation scale group: its scale comes from the tile itself (no second read)
    tile_group = group_k == tile.block_k or (tile.block_k >= k_dim and group_k >= k_dim)
    return tile, dict(
        ws_table_ptr=_pointer_table(scales),
        ws0_ptr=s0,
        x_scale_ptr=q.static(stage) if static else None,
        group_n=group_n,
        group_k=group_k,
        stride_wsl=s0.stride(0),
        stride_wse=s0.stride(1),
        stride_wsn=s0.stride(2),
        stride_wsk=s0.stride(3),
        QUANT=code,
        ACT_QUANT=w8a8,
        ACT_STATIC=static,
        ACT_TILE_GROUP=w8a8 and not static and tile_group,
        ROUND_X=code == 3 and not shrink and call.x.dtype != torch.float32,
        NARROW_K=tile.block_k < 32,
        SCALE_NEXT_BLOCK=dev.quant_scale_next_block,
        CHANNEL_SCALE_BY_K=dev.quant_channel_scale_by_k,
        SCALE_SLOT0=dev.quant_scale_slot0,
        ACT_SCALE_IGNORED=dev.quant_act_scale_ignored,
    )
