"""References for the fused MoE LoRA op: vectorised fp64 (fp64.py) and a naive loop (naive.py)."""

from .fp64 import Fp64Result, moe_lora_fp64
from .naive import moe_lora_naive
from .naive_quant import moe_lora_naive_quant
from .quant import QuantFp64Result, moe_lora_quant_fp64

__all__ = [
    "Fp64Result",
    "QuantFp64Result",
    "moe_lora_fp64",
    "moe_lora_naive",
    "moe_lora_naive_quant",
    "moe_lora_quant_fp64",
]
