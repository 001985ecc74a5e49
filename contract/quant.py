"""Quantized variants of the op (the issue-30 contract): weights stored as fp8 (e4m3fn) or int8 codes with float32
scales, activations quantized on the fly (w8a8) or used as they are (w8a16).

    scheme        none | fp8_w8a8 | int8_w8a8 | int8_w8a16
    scale group   tensor   one scale per (slot, expert) matrix            scale shape (L, E, 1, 1)
                  channel  one per output row n of the matrix             scale shape (L, E, N, 1)
                  block    one per [block_n, block_k] tile of the matrix  scale shape (L, E, cdiv(N, bn), cdiv(K, bk))
    act scale     dynamic  computed per activation row (per row and K-group of block_k for `block`): amax / qmax
                  static   one given float32 scale per stage: shrink_act_scale (x), expand_act_scale (intermediate)

A weight matrix W (N, K) of lora_a[s][l, e] (N = R, K = K) or lora_b[s][l, e] (N = N, K = R) dequantizes as
    W[n, k] = code[n, k] * scale[l, e, n // group_n, k // group_k]
with (group_n, group_k) = (N, K) for tensor, (1, K) for channel, (block_n, block_k) for block (`group_sizes`).
An activation row v (x's row for shrink, the intermediate row t of a (pair, slice) for expand) quantizes as
    q = round_to_nearest_even(clamp(v / s, -qmax, qmax)) in the code type, and dequantizes as q * s,
with s per row (and per K-group of block_k for `block`) for dynamic scales, the given scalar for static ones.
qmax is 448 (the largest finite e4m3fn value) or 127 (symmetric int8). Imports nothing of this project.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QUANT_SCHEMES = ("none", "fp8_w8a8", "int8_w8a8", "int8_w8a16")  # simplest first
SCALE_GROUPS = ("tensor", "channel", "block")
ACT_SCALES = ("dynamic", "static")
CODE_DTYPES = {"fp8_w8a8": torch.float8_e4m3fn, "int8_w8a8": torch.int8, "int8_w8a16": torch.int8}
QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}
FP8_MAX = 448.0


def code_dtype(scheme: str) -> torch.dtype:
    """The dtype of the stored weight codes (and of quantized activations for w8a8)."""
    return CODE_DTYPES[scheme]


def quantizes_activations(scheme: str) -> bool:
    return scheme in ("fp8_w8a8", "int8_w8a8")


def group_sizes(group: str, n: int, k: int, block_n: int, block_k: int) -> tuple[int, int]:
    """(group_n, group_k): how many rows and columns of an (N, K) matrix share one scale."""
    if group == "tensor":
        return n, k
    if group == "channel":
        return 1, k
    return block_n, block_k


def scale_shape(group: str, lead: tuple, n: int, k: int, block_n: int, block_k: int) -> tuple:
    """The scale tensor's shape for weights of shape lead + (N, K)."""
    gn, gk = group_sizes(group, n, k, block_n, block_k)
    return tuple(lead) + (-(-n // gn), -(-k // gk))


def act_group(group: str, k: int, block_k: int) -> int:
    """Columns of an activation row that share one dynamic scale: the whole row, or block_k for `block`."""
    return block_k if group == "block" else k


def quantize_activation(v: torch.Tensor, scheme: str, group_k: int, static: torch.Tensor | None = None) -> tuple:
    """(codes, scales) of activation rows v (rows, K), any float dtype: scales (rows, cdiv(K, group_k)) float32,
    one per row and K-group (dynamic), or `static` (a float32 tensor of one element) broadcast to that shape.
    Computed in float32 (v is first rounded to float32). Rows of zeros get scale 1."""
    dt = code_dtype(scheme)
    qmax = QMAX[dt]
    rows, k = v.shape
    groups = -(-k // group_k)
    v32 = v.to(torch.float32)
    if static is not None:
        s = static.to(torch.float32).reshape(1, 1).expand(rows, groups).contiguous()
    else:
        pad = groups * group_k - k
        padded = torch.nn.functional.pad(v32, (0, pad)) if pad else v32
        amax = padded.abs().reshape(rows, groups, group_k).amax(dim=2)
        s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    per_col = s.repeat_interleave(group_k, dim=1)[:, :k]
    y = (v32 / per_col).clamp_(-qmax, qmax)
    q = y.to(dt) if dt == torch.float8_e4m3fn else torch.round(y).to(dt)
    return q, s


def dequantize(codes: torch.Tensor, scale: torch.Tensor, group_n: int, group_k: int) -> torch.Tensor:
    """float64 weights (..., N, K) from their codes and scales (..., Gn, Gk): exactly what is stored, scaled."""
    n, k = codes.shape[-2:]
    s = scale.double().repeat_interleave(group_n, dim=-2)[..., :n, :].repeat_interleave(group_k, dim=-1)[..., :k]
    return codes.double() * s


@dataclass
class QuantArgs:
    """The quantized op's extra arguments: the scheme and every scale tensor (float32). lora_a / lora_b of OpArgs
    hold the codes."""

    scheme: str
    group: str
    block_n: int
    block_k: int
    act: str  # "dynamic" | "static"
    lora_a_scale: list  # per slice (L, E, Gn, Gk)
    lora_b_scale: list
    shrink_act_scale: torch.Tensor | None = None  # (1,) float32, static only
    expand_act_scale: torch.Tensor | None = None

    def groups(self, n: int, k: int) -> tuple[int, int]:
        return group_sizes(self.group, n, k, self.block_n, self.block_k)

    def static(self, stage: str) -> torch.Tensor | None:
        return self.shrink_act_scale if stage == "shrink" else self.expand_act_scale
