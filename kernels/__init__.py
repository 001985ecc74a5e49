"""Our Triton implementation of the fused MoE LoRA op, and its catalog of seeded-bug mutants."""

from . import runtime  # noqa: F401  first: picks compiler or interpreter before triton.language loads
from .align import AlignBuffers, alloc_align, moe_lora_align_block_size, padded_length
from .config import MoeLoraConfig, TileConfig, default_config
from .moe_lora import MoeLoraCall, Workspace, default_slot_ids, fused_moe_lora, prepare, run_expand, run_shrink
from .mutants import MUTANTS, NO_DEVIATION, Deviation, Mutant
from .runtime import INTERPRET

__all__ = [
    "AlignBuffers",
    "alloc_align",
    "moe_lora_align_block_size",
    "padded_length",
    "MoeLoraConfig",
    "TileConfig",
    "default_config",
    "MoeLoraCall",
    "Workspace",
    "default_slot_ids",
    "fused_moe_lora",
    "prepare",
    "run_expand",
    "run_shrink",
    "MUTANTS",
    "NO_DEVIATION",
    "Deviation",
    "Mutant",
    "INTERPRET",
]
