"""The op's contract (SPEC §2): dtypes, layouts, the row rule, unit roundoff, interpreter limits, and one
value object for the op's arguments. kernels/, reference/ and fuzz/ all read these facts from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

DTYPES = ("float32", "float16", "bfloat16")  # simplest first: what shrinking and minimising move toward
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LAYOUTS = ("per_token", "per_routed")  # x is (M, K): row m; x is (M*k, K): row f = m*k + j

# unit roundoff of each input dtype; fp32 accumulation is allowed twice IEEE's (tensor cores truncate while
# aligning products); TF32 keeps 10 mantissa bits of an fp32 input, and Hopper's wgmma truncates rather than
# rounds them (Triton's tl.dot docs: "without rounding"), so a TF32 input is off by less than 2^-10
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
TINY = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
ACC_UNIT = 2.0**-22
TF32_UNIT = 2.0**-10
FP32_PRECISIONS = ("ieee", "tf32")


def rows_for(layout: str, m: int, k: int) -> int:
    """Rows of x in a layout."""
    return m * k if layout == "per_routed" else m


def layout_of(rows: int, m: int, k: int) -> str:
    """The layout implied by x's row count; M*k == M only when k == 1, where both layouts agree."""
    if rows == m:
        return "per_token"
    if rows == m * k:
        return "per_routed"
    raise ValueError(f"x: {rows} rows; expected M={m} (per_token) or M*k={m * k} (per_routed)")


def row_divisor(layout: str, k: int) -> int:
    """The row of routed pair f = m*k + j is f // row_divisor: k for per-token x, 1 for per-routed x."""
    return k if layout == "per_token" else 1


def x_rows(x: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """x's row for every flat routed index f = m*k + j, as an (M*k, K) tensor."""
    return x if row_divisor(layout_of(x.shape[0], m, k), k) == 1 else x.repeat_interleave(k, dim=0)


def round_to_tf32(t: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    """An fp32 tensor reduced to TF32's 10 mantissa bits: to nearest even, or truncated (what Hopper's wgmma
    does to fp32 inputs); other dtypes are returned unchanged."""
    if t.dtype != torch.float32:
        return t
    bits = t.contiguous().view(torch.int32)
    if not truncate:
        bits = bits + 0xFFF + ((bits >> 13) & 1)
    return (bits & ~0x1FFF).view(torch.float32).reshape(t.shape)


def interpreter_limit(dtype: str, expand_split_k: int, bf16_atomics: bool = False) -> str | None:
    """Why Triton's CPU interpreter cannot run this combination (None if it can): bf16 tl.atomic_add is
    missing there unless the harness's interpreter patch provides it (fuzz.interpreter)."""
    if dtype == "bfloat16" and expand_split_k > 1 and not bf16_atomics:
        return "expand.split_k > 1 with bfloat16 needs bf16 tl.atomic_add, which Triton's interpreter lacks"
    return None


def resolve_device(name: str) -> str:
    """auto -> cuda when a GPU is visible, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@dataclass
class OpArgs:
    """The op's arguments by their SPEC §2 names: what every implementation receives (as keywords) and what the
    references read."""

    out: torch.Tensor
    x: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor
    token_lora: torch.Tensor
    adapter_enabled: torch.Tensor
    lora_a: list
    lora_b: list
    mul_routed_weight: bool
    offset: int
    layout: str
    # contract.quant.QuantArgs of a quantized case (lora_a / lora_b then hold codes); None: the plain op. Not one
    # of the adapter keywords: only implementations that declare quantization receive it (as `quant=`)
    quant: object = None

    def kwargs(self) -> dict:
        kw = {name: getattr(self, name) for name in OP_ARGS}
        if self.quant is not None:
            kw["quant"] = self.quant
        return kw


OP_ARGS = tuple(f.name for f in dataclasses.fields(OpArgs) if f.name != "quant")  # the adapter keywords, in order
