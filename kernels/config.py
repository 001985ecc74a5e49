"""Launch configuration: one frozen object instead of a long argument list."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _is_int(v) -> bool:
    return type(v) is int  # bool and float are refused: a config is a set of exact integers


def _is_pow2(v) -> bool:
    return _is_int(v) and v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class TileConfig:
    """Tiling of one stage (shrink or expand). BLOCK_M is shared and lives in MoeLoraConfig."""

    block_n: int = 32
    block_k: int = 32
    group_size_m: int = 1
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 2
    n_tiles: int = 1  # BLOCK_N tiles each program covers in a loop: set-up paid once, output reads overlapped

    def validate(self, stage: str) -> None:
        for f in dataclasses.fields(self):
            if not _is_int(getattr(self, f.name)):
                raise ValueError(f"{stage}.{f.name}: must be an int (got {getattr(self, f.name)!r})")
        for name in ("block_n", "block_k"):
            v = getattr(self, name)
            if not (_is_pow2(v) and 16 <= v <= 256):
                raise ValueError(f"{stage}.{name}={v}: must be a power of two in [16, 256] (tl.dot needs >= 16)")
        for name, lo, hi in (("group_size_m", 1, 64), ("split_k", 1, 64), ("num_stages", 1, 8),
                            ("n_tiles", 1, 64)):
            v = getattr(self, name)
            if not (_is_int(v) and lo <= v <= hi):
                raise ValueError(f"{stage}.{name}={v!r}: must be an int in [{lo}, {hi}]")
        if not (_is_int(self.num_warps) and self.num_warps in (1, 2, 4, 8, 16)):
            raise ValueError(f"{stage}.num_warps={self.num_warps}: must be one of 1, 2, 4, 8, 16")


ALIGN_IMPLS = ("auto", "triton", "torch")


@dataclass(frozen=True)
class MoeLoraConfig:
    """Everything a fused call needs besides tensors.

    block_m is the align block size: every BLOCK_M group of sorted tokens belongs to one expert, so
    shrink and expand must use the same value as align did.
    align picks align's implementation: "triton" (kernels), "torch" (ops), or "auto" (Triton for GPU
    tensors, torch for CPU ones, where Triton's interpreter is ~100x slower). Both give bitwise the same
    buffers; the fuzzer draws all three so that each is checked on every device.
    """

    block_m: int = 16
    shrink: TileConfig = field(default_factory=TileConfig)
    expand: TileConfig = field(default_factory=TileConfig)
    align: str = "auto"

    def validate(self) -> None:
        for stage in ("shrink", "expand"):
            if not isinstance(getattr(self, stage), TileConfig):
                raise TypeError(f"{stage}: expected a TileConfig, got {type(getattr(self, stage)).__name__}")
        if not _is_int(self.block_m):
            raise ValueError(f"block_m: must be an int (got {self.block_m!r})")
        if not (_is_pow2(self.block_m) and 16 <= self.block_m <= 256):
            raise ValueError(f"block_m={self.block_m}: must be a power of two in [16, 256]")
        self.shrink.validate("shrink")
        self.expand.validate("expand")
        if self.align not in ALIGN_IMPLS:
            raise ValueError(f"align={self.align!r}: must be one of {', '.join(ALIGN_IMPLS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MoeLoraConfig":
        """Strict: every field present, no unknown ones (a repro file must say exactly what ran)."""
        names = {f.name for f in dataclasses.fields(TileConfig)}
        if set(d) != {"block_m", "shrink", "expand", "align"}:
            raise ValueError(f": fields must be block_m, shrink, expand, align (got {sorted(d)})")
        for stage in ("shrink", "expand"):
            if not isinstance(d[stage], dict) or set(d[stage]) != names:
                got = sorted(d[stage]) if isinstance(d[stage], dict) else type(d[stage]).__name__
                raise ValueError(f"{stage}: must be an object with exactly the fields {sorted(names)} (got {got})")
        return cls(block_m=d["block_m"], shrink=TileConfig(**d["shrink"]), expand=TileConfig(**d["expand"]),
                   align=d["align"])


def _pow2_block(n: int, hi: int) -> int:
    """The smallest power-of-two block in [16, hi] that covers n (hi if none does)."""
    return min(max(16, 1 << (max(n, 1) - 1).bit_length()), hi)


def default_config(num_routed: int, rank: int, k_dim: int, n_dim: int, num_experts: int = 1,
                   num_slots: int = 1, num_slices: int = 1) -> MoeLoraConfig:
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
    shrink = TileConfig(block_n=_pow2_block(columns, 128), block_k=128 if k_dim >= 128 else 32, group_size_m=8,
                        split_k=split_k, num_warps=4, num_stages=3, n_tiles=-(-columns // 128))
    # expand is the read-modify-write of the output: narrow tiles, four per program once there are enough
    # (token block, tile) pairs to fill the GPU (the H100 sweep's best in 8 of 10 shapes at M >= 1024)
    block_n = 64 if n_dim >= 64 else 32
    expand = TileConfig(block_n=block_n, block_k=r_block, group_size_m=8, split_k=1, num_warps=2, num_stages=2,
                        n_tiles=4 if blocks_m * -(-n_dim // block_n) >= 2048 else 1)
    return MoeLoraConfig(block_m=block_m, shrink=shrink, expand=expand)
