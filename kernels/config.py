"""Our kernels' choice of launch configuration per shape. The configuration type itself belongs to the op's
contract (contract.launch), re-exported here for existing callers."""

from __future__ import annotations

from moe_lora_fuzz.contract.launch import ALIGN_IMPLS, LaunchConfig, MoeLoraConfig, TileConfig

__all__ = ["ALIGN_IMPLS", "LaunchConfig", "MoeLoraConfig", "TileConfig", "default_config"]


def _pow2_block(n: int, hi: int) -> int:
    """The smallest power-of-two block in [16, hi] that covers n (hi if none does)."""
    return min(max(16, 1 << (max(n, 1) - 1).bit_length()), hi)


def default_config(
    num_routed: int, rank: int, k_dim: int, n_dim: int, num_experts: int = 1, num_slots: int = 1, num_slices: int = 1
) -> MoeLoraConfig:
    """Heuristic per shape, used when the caller passes no config; fitted to scripts/tune_configs.py on
    H200 and H100 (README "Kernel speed").

    BLOCK_M follows the expected tokens per (slot, expert) group: a block mostly made of padding still
    reads a whole expert's weights. Shrink is a skinny GEMM (output width S*R, reduction K): a wide BLOCK_K,
    and split-K when few token blocks exist. Expand has reduction R (small) and output N.
    """
    per_group = num_routed / max(1, num_experts * num_slots)
    block_m = 16 if per_group <= 12 else (32 if per_group <= 48 else 64)
    r_block = _pow2_block(rank, 64)
    columns = rank * num_slices  # shrink covers every slice in one program: x is read once
    blocks_m = max(1, num_routed // block_m)
    split_k = 1 if blocks_m >= 64 or k_dim < 512 else min(8, max(1, k_dim // 512))
    shrink = TileConfig(
        block_n=_pow2_block(columns, 128),
        block_k=128 if k_dim >= 128 else 32,
        group_size_m=8,
        split_k=split_k,
        num_warps=4,
        num_stages=3,
        n_tiles=-(-columns // 128),
    )
    # expand is the read-modify-write of the output: narrow tiles, four per program once there are enough
    # (token block, tile) pairs to fill the GPU (the H100 sweep's best in 8 of 10 shapes at M >= 1024)
    block_n = 64 if n_dim >= 64 else 32
    expand = TileConfig(
        block_n=block_n,
        block_k=r_block,
        group_size_m=8,
        split_k=1,
        num_warps=2,
        num_stages=2,
        n_tiles=4 if blocks_m * -(-n_dim // block_n) >= 2048 else 1,
    )
    return MoeLoraConfig(block_m=block_m, shrink=shrink, expand=expand)
