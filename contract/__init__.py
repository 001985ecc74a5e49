"""The op's contract, below kernels/, reference/ and fuzz/: what the op computes on which inputs, and the
launch-configuration type every implementation may receive. Imports nothing of this project."""

from .knobs import Knob, knob, knobs_of
from .launch import ALIGN_IMPLS, LaunchConfig, MoeLoraConfig, TileConfig
from .op import (
    ACC_UNIT,
    DTYPES,
    FP32_PRECISIONS,
    LAYOUTS,
    OP_ARGS,
    TF32_UNIT,
    TINY,
    TORCH_DTYPES,
    UNIT_ROUNDOFF,
    OpArgs,
    interpreter_limit,
    layout_of,
    resolve_device,
    round_to_tf32,
    row_divisor,
    rows_for,
    x_rows,
)
from .quant import ACT_SCALES, QUANT_SCHEMES, SCALE_GROUPS, QuantArgs

__all__ = [
    "ACT_SCALES",
    "QUANT_SCHEMES",
    "SCALE_GROUPS",
    "QuantArgs",
    "Knob",
    "knob",
    "knobs_of",
    "ALIGN_IMPLS",
    "LaunchConfig",
    "MoeLoraConfig",
    "TileConfig",
    "ACC_UNIT",
    "DTYPES",
    "FP32_PRECISIONS",
    "LAYOUTS",
    "OP_ARGS",
    "TF32_UNIT",
    "TINY",
    "TORCH_DTYPES",
    "UNIT_ROUNDOFF",
    "OpArgs",
    "interpreter_limit",
    "layout_of",
    "resolve_device",
    "round_to_tf32",
    "row_divisor",
    "rows_for",
    "x_rows",
]
