"""The data of a quantized case (contract/quant.py): weight codes, weight scales and static activation scales, laid
out in the case's guarded arena beside the other buffers (fuzz/data/tensors.py places them through `weight_slot` and
`place_scales`).

Weight codes (a function of the case seed and the element's coordinates, like every generated value):
- fp8 e4m3fn: a uniform byte over every finite nonzero code (so subnormals up to 448 all occur), and code[l, e, 0, 0]
  of every matrix +-448, the largest finite value;
- int8: uniform over [-128, 127] without 0, and code[l, e, 0, 0] = -128 (outside the symmetric range [-127, 127]
  that a quantizer produces: a kernel reading codes as unsigned, or clamping them, is seen).
Rows of A / columns of B beyond real_rank are zero codes, as engines pad adapters.
Weight scales are powers of two, 2^(base + 2 * ((l + e + s + nb + kb) mod 3) - 2): any two neighbours (next block
along N or K, next slot, expert or slice) differ by a factor of 4 or 16, so a scale read from the wrong block,
slot or slice moves the result far outside the bound. The base keeps A x and B t of order one (as fuzz/data/tensors.py
does for unquantized weights).
Static activation scales are powers of two: the shrink one keeps |x| < 3 (the generator's range) inside the code
range, the expand one is sized for |t| ~ 1, so the larger intermediates saturate (an edge the bound models).
"""

from __future__ import annotations

import math

import torch
from moe_lora_fuzz.contract.quant import (
    QMAX,
    QuantArgs,
    code_dtype,
    quantizes_activations,
    scale_shape,
)
from moe_lora_fuzz.fuzz.data import counter_rng as rng
from moe_lora_fuzz.fuzz.space.case import Case

CODE_RMS_LOG2 = 6  # log2 of the typical code magnitude (fp8 uniform bytes ~2^5.5, int8 ~2^6.2)
X_MAX = 3.0  # |x| < 3: the generator's values are sums of three uniforms in (-1, 1)


def quantized(c: Case) -> bool:
    return c.quant != "none"


def _fp8_bytes(u: torch.Tensor) -> torch.Tensor:
    """u uniform in [0, 251] -> every finite nonzero e4m3fn byte: 0x01..0x7E and 0x81..0xFE."""
    return torch.where(u < 126, u + 1, u + 3).to(torch.uint8)


def write_codes(c: Case, which: str, s: int, dest: torch.Tensor) -> list:
    """Codes of lora_a[s] (which = "a", (L, E, R, K)) or lora_b[s] ("b", (L, E, N, R))."""
    key = rng.stream_key(c.seed, f"lora_{which}[{s}].codes")
    shape = list(dest.shape)
    fp8 = dest.dtype == torch.float8_e4m3fn

    def use(hs: list) -> None:
        if fp8:
            codes = _fp8_bytes(rng.uniform_grid(hs[0], 0, 251)).view(torch.float8_e4m3fn).view(dest.shape)
            edge = 448.0
        else:
            u = rng.uniform_grid(hs[0], 0, 254)
            codes = torch.where(u < 128, u - 128, u - 127).to(torch.int8).view(dest.shape)
            edge = -128
        codes[:, :, 0, 0] = edge
        if which == "a":
            codes[:, :, c.real_rank :] = 0
        else:
            codes[..., c.real_rank :] = 0
        dest.copy_(codes)

    return [rng.Hashed([(key, shape)], use, dest.device)]


def _scale_exponents(c: Case, s: int, shape: tuple, base: int, device) -> torch.Tensor:
    L, E, gn, gk = shape
    idx = (
        torch.arange(L, device=device).view(L, 1, 1, 1)
        + torch.arange(E, device=device).view(1, E, 1, 1)
        + torch.arange(gn, device=device).view(1, 1, gn, 1)
        + torch.arange(gk, device=device).view(1, 1, 1, gk)
        + s
    )
    return base + 2 * (idx % 3) - 2


def write_scales(c: Case, which: str, s: int, dest: torch.Tensor) -> None:
    reduction = c.k_dim if which == "a" else c.real_rank
    base = rng.pow2_scale(reduction**-0.5) - CODE_RMS_LOG2
    e = _scale_exponents(c, s, tuple(dest.shape), base, dest.device)
    dest.copy_(torch.pow(2.0, e.to(torch.float32)))


def static_scale(c: Case, stage: str) -> float:
    """The static activation scale of a stage (a power of two)."""
    qmax = QMAX[code_dtype(c.quant)]
    if stage == "shrink":
        return 2.0 ** math.ceil(math.log2(X_MAX / qmax))
    return 2.0 ** math.ceil(math.log2(4.0 / qmax))


def weight_slot(c: Case, which: str, s: int, dtype: torch.dtype, write, fill) -> dict:
    """The `put` keywords of lora_a[s] / lora_b[s]: the case dtype and its writer, or the code dtype and codes."""
    if not quantized(c):
        return {"dtype": dtype, "write": write}
    dt = code_dtype(c.quant)
    kw = {"dtype": dt, "write": lambda v: write_codes(c, which, s, v)}
    if dt == torch.int8:  # no NaN: a value far from the codes' typical magnitude, another one in the diagnosis rerun
        kw["guard_value"] = 99 if fill.input_margin != fill.input_margin else -99
    return kw


def scale_shapes(c: Case) -> dict:
    """{buffer name: shape} of the scale buffers of a quantized case."""
    L, E, R = c.num_slots, c.num_experts, c.rank
    bn, bk = c.quant_block_n, c.quant_block_k
    out = {}
    for s in range(c.num_slices):
        out[f"lora_a_scale[{s}]"] = scale_shape(c.quant_group, (L, E), R, c.k_dim, bn, bk)
        out[f"lora_b_scale[{s}]"] = scale_shape(c.quant_group, (L, E), c.n_dim, R, bn, bk)
    if quantizes_activations(c.quant) and c.act_scale == "static":
        out["shrink_act_scale"] = (1,)
        out["expand_act_scale"] = (1,)
    return out


def place_scales(c: Case, put) -> None:
    if not quantized(c):
        return
    for name, shape in scale_shapes(c).items():
        if name.endswith("act_scale"):
            value = static_scale(c, name.split("_")[0])
            put(name, shape, torch.float32, is_input=True, write=lambda v, value=value: v.fill_(value))
        else:
            which, s = name[5], int(name.split("[")[1][:-1])
            put(
                name,
                shape,
                torch.float32,
                is_input=True,
                write=lambda v, which=which, s=s: write_scales(c, which, s, v),
            )


def quant_args(c: Case, views) -> QuantArgs | None:
    """The QuantArgs of a quantized case from its buffers by name (views or host copies); None when unquantized."""
    if not quantized(c):
        return None
    static = quantizes_activations(c.quant) and c.act_scale == "static"
    return QuantArgs(
        c.quant,
        c.quant_group,
        c.quant_block_n,
        c.quant_block_k,
        c.act_scale,
        [views[f"lora_a_scale[{s}]"] for s in range(c.num_slices)],
        [views[f"lora_b_scale[{s}]"] for s in range(c.num_slices)],
        views["shrink_act_scale"] if static else None,
        views["expand_act_scale"] if static else None,
    )
