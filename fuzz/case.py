"""The knob space: a Case is one point of it plus a data seed, and this module owns its validity rules.

Strategies (Hypothesis), the campaign's random source, the minimiser and JSON loading all go through
`generate` and `Case.validate`, so a case that one of them accepts every other accepts too.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from contract import DTYPES, LAYOUTS, Knob, MoeLoraConfig, interpreter_limit, knob, knobs_of
from kernels.config import ALIGN_IMPLS, TileConfig, default_config

ROUTINGS = ("uniform", "distinct", "one_hot", "sparse")
SLOTTINGS = ("one_slot", "no_base", "random", "all_with_base", "all_base")


def _size(lo: int, hi: int, **kw) -> Knob:
    kw.setdefault("rule_text", f"must lie in [{lo}, {hi}]")
    return Knob.integer(lo, hi, bucket="log2", **kw)


@dataclass(frozen=True)
class Case:
    """One point of the knob space. Every default is the simplest value of its knob (first option, smallest
    size, flag off): what minimising and Hypothesis shrinking move toward. Each field's metadata (contract.Knob)
    gives its range, coverage bucket and scope; validation, minimisation and coverage derive from it."""

    seed: int = knob(0, Knob.integer(0, 2**63 - 1, bucket="", rule_text="must lie in [0, 2**63)"))
    dtype: str = knob(DTYPES[0], Knob.choice(DTYPES))
    m: int = knob(1, _size(0, 1 << 16, simplest=1))  # 0 is an edge, not a simplification
    top_k: int = knob(1, _size(1, 16))
    num_experts: int = knob(1, _size(1, 512))
    num_slots: int = knob(1, _size(1, 64))
    rank: int = knob(1, _size(1, 256))  # R: padded rank of the buffers
    # rows of A / columns of B beyond it are zero, as engines pad adapters
    real_rank: int = knob(1, _size(1, 256, rule_text="must lie in [1, rank]"))
    k_dim: int = knob(1, _size(1, 16384))
    n_dim: int = knob(1, _size(1, 16384))
    num_slices: int = knob(1, Knob.integer(1, 2, rule_text="must be 1 or 2"))
    layout: str = knob(LAYOUTS[0], Knob.choice(LAYOUTS))
    mul_routed_weight: bool = knob(False, Knob.flag())
    offset: int = knob(0, _size(0, 1024))
    extra_cols: int = knob(0, _size(0, 1024))
    routing: str = knob(ROUTINGS[0], Knob.choice(ROUTINGS))
    slotting: str = knob(SLOTTINGS[0], Knob.choice(SLOTTINGS))
    disabled: tuple = knob((), Knob("other", bucket=""))  # slot ids with adapter_enabled = 0
    # inputs and outputs are padded views at unaligned addresses, not contiguous tensors
    strided: bool = knob(False, Knob.flag())
    # extra BLOCK_M blocks in the align buffers beyond P (our kernels' workspace)
    align_slack: int = knob(0, _size(0, 1024, scope="ours"))
    config: MoeLoraConfig = field(default_factory=MoeLoraConfig, metadata={"knob": Knob("other", scope="launch")})

    # ---- validity -------------------------------------------------------------------------------
    def validate(self, interpreter: bool = False, bf16_atomics: bool | None = None) -> "Case":
        """Raise ValueError naming the field and the rule; return self when valid. bf16_atomics: whether the
        interpreter adds bf16 atomically (None: ask fuzz.interpreter, which patches it where it can)."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"case.{name}: {rule} (got {getattr(self, name, None)!r})")

        for name, k in knobs_of(Case).items():
            v = getattr(self, name)
            if k.kind in ("int", "pow2"):
                need(type(v) is int, name, "must be an int")
            need(k.ok(v), name, k.rule())
        need(self.real_rank <= self.rank, "real_rank", "must lie in [1, rank]")
        need(self.routing != "distinct" or self.top_k <= self.num_experts, "routing",
             "'distinct' needs top_k <= num_experts")
        need(isinstance(self.disabled, tuple) and all(type(d) is int and 0 <= d < self.num_slots
                                                      for d in self.disabled)
             and len(set(self.disabled)) == len(self.disabled), "disabled",
             "must be distinct slot ids in [0, num_slots)")
        need(isinstance(self.config, MoeLoraConfig), "config", "must be a MoeLoraConfig")
        self.config.validate()
        if interpreter and bf16_atomics is None:
            from .interpreter import bf16_atomics_ok
            bf16_atomics = bf16_atomics_ok()
        limit = interpreter_limit(self.dtype, self.config.expand.split_k, bf16_atomics) if interpreter else None
        if limit:
            raise ValueError(f"case.config: {limit} (cannot run under Triton's interpreter)")
        return self

    # ---- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["disabled"] = list(self.disabled)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        """Build and validate; every problem is a ValueError naming the field."""
        if not isinstance(d, dict):
            raise ValueError(f"case: expected an object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"case.{unknown[0]}: unknown field")
        missing = sorted(names - set(d))
        if missing:
            raise ValueError(f"case.{missing[0]}: missing")
        kw = dict(d)
        if not isinstance(kw["disabled"], list):
            raise ValueError("case.disabled: must be a list of slot ids")
        kw["disabled"] = tuple(kw["disabled"])
        kw["config"] = _config_from_dict(kw["config"])
        return cls(**kw).validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)

    def knobs(self) -> dict:
        """Every knob by one flat name: case fields plus "config.<flat launch knob>"."""
        out = {name: getattr(self, name) for name in knobs_of(Case) if name != "config"}
        out.update({f"config.{k}": v for k, v in self.config.flat().items()})
        return out

    def with_knob(self, name: str, value) -> "Case":
        if name.startswith("config."):
            return self.replace(config=self.config.with_knob(name.removeprefix("config."), value))
        return self.replace(**{name: value})

    @property
    def coarse_class(self) -> str:
        """The part of a signature that comes from the case (DESIGN: dtype, layout, flags, split-K)."""
        return (f"{self.dtype}|{self.layout}|mrw={int(self.mul_routed_weight)}"
                f"|ssk={int(self.config.shrink.split_k > 1)}|esk={int(self.config.expand.split_k > 1)}")


def knob_meta(name: str) -> Knob:
    """The metadata of a flat knob name of Case.knobs()."""
    from contract import knob_meta as launch_meta
    return launch_meta(name.removeprefix("config.")) if name.startswith("config.") else knobs_of(Case)[name]


def _config_from_dict(d) -> MoeLoraConfig:
    if not isinstance(d, dict):
        raise ValueError("case.config: expected an object")
    try:
        cfg = MoeLoraConfig.from_dict(d)
        cfg.validate()
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise ValueError(f"case.config{msg if msg.startswith(':') else '.' + msg}") from None
    return cfg


# ---- generation ------------------------------------------------------------------------------------
class Source(Protocol):
    """Where choices come from: Hypothesis's `draw` in tests, a seeded random.Random in campaigns.

    Every choice is written so that its smallest value / first option is the simplest, which is where
    Hypothesis shrinks to.
    """

    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, options: Sequence): ...
    def flag(self) -> bool: ...


class RandomSource:
    """Deterministic source for campaigns; leans on the ends of every range like Hypothesis does."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        r = self.rng.random()
        if r < 0.1:
            return lo
        if r < 0.2:
            return hi
        if r < 0.6 and hi > lo:  # log-uniform: small sizes are common, large ones still reached
            return min(hi, lo + int(2 ** self.rng.uniform(0, (hi - lo + 1).bit_length())) - 1)
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence):
        return options[self.rng.randrange(len(options))]

    def flag(self) -> bool:
        return self.rng.random() < 0.5


@dataclass(frozen=True)
class Sizes:
    """Upper limits of a profile's shapes (the interpreter needs tiny ones)."""

    m: int
    top_k: int
    experts: int
    slots: int
    rank: int
    k_dim: int
    n_dim: int
    offset: int
    blocks: tuple  # BLOCK_N / BLOCK_K choices
    block_ms: tuple
    split_k: int
    warps: tuple
    stages: tuple
    config_pool: tuple = ()  # when set, configs come from this list: compiled kernels get reused


def _pool() -> tuple:
    """A bounded set of GPU configurations: every block size, split-K on both stages, warps and stages,
    grouped ordering, each appearing in several combinations."""
    rows = [  # block_m, shrink and expand (n, k, group, split, warps, stages[, n_tiles])
        (16, (16, 16, 1, 1, 4, 2), (16, 16, 1, 1, 4, 2)),
        (16, (16, 64, 8, 4, 4, 3), (64, 16, 8, 1, 4, 3, 4)),
        (16, (32, 128, 1, 8, 4, 4), (128, 16, 1, 2, 4, 2, 2)),
        (16, (16, 32, 4, 3, 2, 1), (32, 32, 4, 3, 2, 1)),
        (32, (32, 32, 8, 1, 4, 2), (64, 32, 8, 1, 4, 2)),
        (32, (16, 128, 1, 2, 8, 3), (128, 16, 2, 1, 8, 3, 8)),
        (32, (64, 64, 2, 1, 4, 4), (32, 64, 2, 2, 4, 4)),
        (32, (16, 16, 8, 5, 2, 2, 3), (16, 16, 8, 1, 2, 2, 3)),
        (64, (16, 64, 8, 1, 4, 3), (128, 16, 8, 1, 4, 3, 2)),
        (64, (32, 128, 4, 2, 8, 2), (64, 32, 4, 2, 8, 2, 5)),
        (64, (64, 32, 1, 1, 4, 1), (16, 64, 1, 1, 4, 1)),
        (64, (128, 16, 2, 4, 8, 4), (128, 32, 2, 1, 8, 4)),  # every row fits fp32 in 227 KiB of smem
    ]
    return tuple(MoeLoraConfig(block_m=bm, shrink=TileConfig(*s), expand=TileConfig(*e)) for bm, s, e in rows)


CPU_SIZES = Sizes(m=40, top_k=4, experts=8, slots=4, rank=40, k_dim=160, n_dim=72, offset=8,
                  blocks=(16, 32, 64), block_ms=(16, 32), split_k=4, warps=(4,), stages=(2,))
GPU_SIZES = Sizes(m=600, top_k=8, experts=64, slots=8, rank=72, k_dim=1100, n_dim=600, offset=64,
                  blocks=(16, 32, 64, 128), block_ms=(16, 32, 64), split_k=8, warps=(2, 4, 8), stages=(1, 2, 3, 4),
                  config_pool=_pool())


def generate(src: Source, sizes: Sizes, *, interpreter: bool, seed: int) -> Case:
    """Draw one valid case; validity holds by construction (no rejection)."""
    dtype = src.choice(DTYPES)
    top_k = src.integer(1, sizes.top_k)
    experts = src.integer(1, sizes.experts)
    slots = src.integer(1, sizes.slots)
    rank = src.integer(1, sizes.rank)
    routings = ROUTINGS if top_k <= experts else tuple(r for r in ROUTINGS if r != "distinct")

    k_dim, n_dim = src.integer(1, sizes.k_dim), src.integer(1, sizes.n_dim)
    num_slices = src.integer(1, 2)

    def block(dim: int, smaller: bool = False):
        """Half the time (always if `smaller`) a block smaller than the dimension, so multi-tile loops and
        tails run."""
        small = tuple(b for b in sizes.blocks if b < dim)
        return src.choice(small) if small and (smaller or src.flag()) else src.choice(sizes.blocks)

    def tile(out_dim: int, reduction: int, split: bool, expand: bool) -> TileConfig:
        split_hi = 1 if (expand and interpreter and dtype == "bfloat16") else sizes.split_k
        split_k = src.integer(1, split_hi) if split else 1
        # a split-K case whose reduction fits one block leaves every chunk but the first empty: wasted
        return TileConfig(block_n=block(out_dim), block_k=block(reduction, smaller=split_k > 1),
                          group_size_m=src.choice((1, 2, 4, 8)), split_k=split_k,
                          num_warps=src.choice(sizes.warps), num_stages=src.choice(sizes.stages),
                          n_tiles=src.choice((1, 1, 2, 3)))

    case = Case(
        seed=seed, dtype=dtype, m=src.integer(1, sizes.m), top_k=top_k, num_experts=experts,
        num_slots=slots, rank=rank, real_rank=src.integer(1, rank) if src.flag() else rank,
        k_dim=k_dim, n_dim=n_dim, num_slices=num_slices,
        layout=src.choice(LAYOUTS), mul_routed_weight=src.flag(), offset=src.integer(0, sizes.offset),
        extra_cols=src.integer(0, 4), routing=src.choice(routings), slotting=src.choice(SLOTTINGS),
        disabled=tuple(s for s in range(slots) if src.integer(0, 3) == 3),
        strided=src.flag(), align_slack=src.choice((0, 0, 1, 3)),
        config=(src.choice(sizes.config_pool) if sizes.config_pool else
                MoeLoraConfig(block_m=src.choice(sizes.block_ms),
                              shrink=tile(rank * num_slices, k_dim, src.flag(), False),  # S*R columns
                              expand=tile(n_dim, rank, src.flag(), True))),
    )
    if src.integer(0, 9) == 0:  # empty batch now and then
        case = case.replace(m=0)
    if src.integer(0, 7) == 0:  # what callers get without a config: the per-shape heuristic, fuzzed too
        c = case
        case = c.replace(config=default_config(c.m * c.top_k, c.rank, c.k_dim, c.n_dim, c.num_experts, c.num_slots,
                                               c.num_slices))
    case = case.replace(config=dataclasses.replace(case.config, align=src.choice(ALIGN_IMPLS)))
    return case.validate(interpreter)
