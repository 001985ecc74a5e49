"""The launch configuration: one frozen object instead of a long argument list.

It belongs to the op's contract, not to our kernels: the fuzzer varies it, hands it to any implementation
that takes a `config` parameter, and stores it in repro files. Every field carries its valid range once
(contract.knobs); validation derives from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .knobs import Knob, knob, knobs_of


@dataclass(frozen=True)
class TileConfig:
    """Tiling of one stage (shrink or expand). BLOCK_M is shared and lives in MoeLoraConfig."""

    block_n: int = knob(32, Knob.pow2(16, 256, why="tl.dot needs >= 16"))
    block_k: int = knob(32, Knob.pow2(16, 256, why="tl.dot needs >= 16"))
    group_size_m: int = knob(1, Knob.integer(1, 64))
    split_k: int = knob(1, Knob.integer(1, 64))
    num_warps: int = knob(4, Knob.choice((1, 2, 4, 8, 16)))
    num_stages: int = knob(2, Knob.integer(1, 8))
    # BLOCK_N tiles each program covers in a loop: set-up paid once, output reads overlapped (our kernels only)
    n_tiles: int = knob(1, Knob.integer(1, 64))

    def validate(self, stage: str) -> None:
        for name, k in knobs_of(type(self)).items():
            k.check(f"{stage}.{name}", getattr(self, name))


ALIGN_IMPLS = ("auto", "triton", "torch")


@dataclass(frozen=True)
class MoeLoraConfig:
    """Everything a fused call needs besides tensors (the "launch configuration").

    block_m is the align block size: every BLOCK_M group of sorted tokens belongs to one expert, so
    shrink and expand must use the same value as align did.
    align picks align's implementation in our kernels: "triton" (kernels), "torch" (ops), or "auto" (Triton
    for GPU tensors, torch for CPU ones). Other implementations ignore it.
    """

    block_m: int = knob(16, Knob.pow2(16, 256))
    shrink: TileConfig = field(default_factory=TileConfig)
    expand: TileConfig = field(default_factory=TileConfig)
    align: str = knob("auto", Knob.choice(ALIGN_IMPLS))

    STAGES = ("shrink", "expand")

    def validate(self) -> None:
        for stage in self.STAGES:
            if not isinstance(getattr(self, stage), TileConfig):
                raise TypeError(f"{stage}: expected a TileConfig, got {type(getattr(self, stage)).__name__}")
        for name, k in knobs_of(type(self)).items():
            k.check(name, getattr(self, name))
        for stage in self.STAGES:
            getattr(self, stage).validate(stage)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, defaults: bool = False) -> "MoeLoraConfig":
        """Strict: every field present, no unknown ones (a repro file must say exactly what ran).
        defaults=True fills missing fields with their neutral value (schema migration of older files)."""
        names = {f.name for f in dataclasses.fields(TileConfig)}
        top = tuple(f.name for f in dataclasses.fields(cls))  # block_m, the stages, align
        got = set(d)
        if got - set(top) or (not defaults and got != set(top)):
            raise ValueError(f": fields must be {', '.join(top)} (got {sorted(d)})")
        kw = {name: d[name] for name in knobs_of(cls) if name in d}  # block_m, align
        for stage in cls.STAGES:
            if stage not in d:
                continue
            sd = d[stage]
            if not isinstance(sd, dict) or set(sd) - names or (not defaults and set(sd) != names):
                got = sorted(sd) if isinstance(sd, dict) else type(sd).__name__
                raise ValueError(f"{stage}: must be an object with exactly the fields {sorted(names)} (got {got})")
            kw[stage] = TileConfig(**sd)
        return cls(**kw)

    def flat(self) -> dict:
        """{"block_m": .., "shrink.block_n": .., ...}: one name per knob (coverage, minimiser, messages)."""
        out = {name: getattr(self, name) for name in knobs_of(type(self))}  # block_m, align
        for stage in self.STAGES:
            out.update({f"{stage}.{k}": v for k, v in dataclasses.asdict(getattr(self, stage)).items()})
        return out

    def with_knob(self, name: str, value) -> "MoeLoraConfig":
        """A copy with one flat knob ("expand.split_k", "block_m") changed."""
        stage, _, field_name = name.rpartition(".")
        if not stage:
            return dataclasses.replace(self, **{name: value})
        return dataclasses.replace(self, **{stage: dataclasses.replace(getattr(self, stage), **{field_name: value})})


LaunchConfig = MoeLoraConfig  # the name the protocol documents; MoeLoraConfig is kept for existing callers
