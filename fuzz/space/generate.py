"""Drawing cases: where choices come from (Hypothesis or a seeded random source), the size limits of a
profile, and the boundaries of derived sizes the search aims at.

The derived sizes are those of this kernel family's launch path (SPEC §3: the padded length P, BLOCK_M
blocks, align's chunks of routed pairs, the grid's GROUP_SIZE_M groups and BLOCK_N tiles), read from our
kernels where they define them: multiples that any implementation of the op meets in some form.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Protocol, Sequence

from moe_lora_fuzz.contract import DTYPES, LAYOUTS, interpreter_limit
from moe_lora_fuzz.fuzz.runtime.interpreter import bf16_atomics_ok
from moe_lora_fuzz.fuzz.space.case import ROUTINGS, SLOTTINGS, Case
from moe_lora_fuzz.kernels.align import CHUNK_COMPILED, CHUNK_INTERPRETED, padded_length
from moe_lora_fuzz.kernels.config import ALIGN_IMPLS, MoeLoraConfig, TileConfig, default_config
from moe_lora_fuzz.kernels.moe_lora import max_used_blocks


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
    classes: "Classes | None" = None  # when set, cases come in compile classes (see Classes)


# ---- compile classes ---------------------------------------------------------------------------------
# Triton compiles one kernel variant per set of constexprs and per divisibility class of the integer arguments
# (== 1, multiple of 16) and pointers (16-byte aligned). A GPU case drawn afresh meets about five new variants,
# 0.7 s each to compile on an H100 host (fuzz.runtime.phases: 70-90% of a campaign was `jit`). So GPU campaigns draw
# cases in compile classes: a class fixes the knobs that reach constexprs and strides and the residues mod 16
# of the sizes; each case of it draws the rest afresh (M, routing, slotting, disabled slots, real rank, align
# slack, the data, which boundary to aim at) and moves K, N, R and the offset by multiples of 16, which keeps
# every stride's and pointer's divisibility class. The classes are a stream shared by every seed
# and shard (a warm machine has them compiled), growing with the campaign; one case in `fresh_every` is a class
# of its own, drawn from the campaign's seed, so nights still differ.
CLASS_KNOBS = (
    "dtype",
    "top_k",
    "num_experts",
    "num_slots",
    "num_slices",
    "layout",
    "mul_routed_weight",
    "strided",
    "extra_cols",
)
SHIFTED = ("k_dim", "n_dim", "rank", "offset")  # moved by multiples of 16 within a class
CLASS_SALT = 0x5C1A55


@dataclass(frozen=True)
class Classes:
    # A worker meets each class's ~7 variants once (30-60 ms each even from Triton's disk cache, 0.7 s to
    # compile): at these rates a 90 s H100 campaign of ~2,700 cases meets ~40 classes, an hour ~1,500.
    start: int = 8  # shared classes open from the first case
    every: int = 150  # one more shared class per this many cases
    fresh_every: int = 200  # about one case in this many is a class of its own

    def of(self, seed: int, index: int) -> int | None:
        """The shared class of case `index` of a campaign, or None for a class of its own."""
        src = RandomSource(seed ^ CLASS_SALT)
        if _rarely(src, self.fresh_every):
            return None
        return src.choice(range(self.start + index // self.every))


_PROTOTYPES: dict = {}


def prototype(sizes: Sizes, interpreter: bool, class_id: int) -> "Case":
    """Class `class_id`'s knobs: a case drawn from a seed that depends on nothing but the class."""
    key = (sizes, interpreter, class_id)
    if key not in _PROTOTYPES:
        seed = (class_id * 0x9E3779B97F4A7C15 + CLASS_SALT) % (2**63)
        _PROTOTYPES[key] = generate(RandomSource(seed), sizes, interpreter=interpreter, seed=seed)
    return _PROTOTYPES[key]


def class_of(sizes: Sizes, seed: int, index: int) -> int | None:
    """The shared compile class of the index-th case of a stream, None for a class of its own (or no classes)."""
    return sizes.classes.of(seed, index) if sizes.classes else None


def draw(sizes: Sizes, seed: int, index: int, *, interpreter: bool) -> "Case":
    """The index-th case of a stream (a campaign's, a benchmark's): in its compile class when `sizes` has them."""
    cls = class_of(sizes, seed, index)
    proto = None if cls is None else prototype(sizes, interpreter, cls)
    return generate(RandomSource(seed), sizes, interpreter=interpreter, seed=seed, proto=proto)


def same_class(a: int, b: int) -> bool:
    """Whether Triton specialises a and b alike: the same residue mod 16, and both or neither equal to 1."""
    return a % 16 == b % 16 and (a == 1) == (b == 1)


def in_class(src: "Source", c: "Case", proto: "Case", sizes: Sizes) -> "Case":
    """c with the class knobs of `proto` and its sizes moved from proto's by multiples of 16."""
    moved = {}
    for f in SHIFTED:
        v = getattr(proto, f)
        hi = max(v, getattr(sizes, f))
        moved[f] = src.choice([w for w in range(v % 16, hi + 1, 16) if same_class(w, v) and (w or f == "offset")])
    n = proto.num_slots
    c = c.replace(**{f: getattr(proto, f) for f in CLASS_KNOBS}, **moved, config=proto.config)
    return c.replace(real_rank=min(c.real_rank, c.rank), disabled=tuple(s for s in c.disabled if s < n)[: n - 1])


# Columns of the pool's tile entries: every value is written out, so neither a reordered TileConfig nor a changed
# default moves the pool, and a new TileConfig field with a default leaves it as it is.
POOL_TILE_COLUMNS = ("block_n", "block_k", "group_size_m", "split_k", "num_warps", "num_stages", "n_tiles")


def _pool() -> tuple:
    """A bounded set of GPU configurations: every block size, split-K on both stages, warps and stages,
    grouped ordering, each appearing in several combinations. Each is validated when the module loads."""
    rows = [  # block_m, shrink and expand by POOL_TILE_COLUMNS: (n, k, group, split, warps, stages, n_tiles)
        (16, (16, 16, 1, 1, 4, 2, 1), (16, 16, 1, 1, 4, 2, 1)),
        (16, (16, 64, 8, 4, 4, 3, 1), (64, 16, 8, 1, 4, 3, 4)),
        (16, (32, 128, 1, 8, 4, 4, 1), (128, 16, 1, 2, 4, 2, 2)),
        (16, (16, 32, 4, 3, 2, 1, 1), (32, 32, 4, 3, 2, 1, 1)),
        (32, (32, 32, 8, 1, 4, 2, 1), (64, 32, 8, 1, 4, 2, 1)),
        (32, (16, 128, 1, 2, 8, 3, 1), (128, 16, 2, 1, 8, 3, 8)),
        (32, (64, 64, 2, 1, 4, 4, 1), (32, 64, 2, 2, 4, 4, 1)),
        (32, (16, 16, 8, 5, 2, 2, 3), (16, 16, 8, 1, 2, 2, 3)),
        (64, (16, 64, 8, 1, 4, 3, 1), (128, 16, 8, 1, 4, 3, 2)),
        (64, (32, 128, 4, 2, 8, 2, 1), (64, 32, 4, 2, 8, 2, 5)),
        (64, (64, 32, 1, 1, 4, 1, 1), (16, 64, 1, 1, 4, 1, 1)),
        (64, (128, 16, 2, 4, 8, 4, 1), (128, 32, 2, 1, 8, 4, 1)),  # every row fits fp32 in 227 KiB of smem
    ]

    def tile(values: tuple) -> TileConfig:
        return TileConfig(**dict(zip(POOL_TILE_COLUMNS, values, strict=True)))

    pool = tuple(MoeLoraConfig(block_m=bm, shrink=tile(s), expand=tile(e)) for bm, s, e in rows)
    for cfg in pool:
        cfg.validate()
    return pool


CPU_SIZES = Sizes(
    m=40,
    top_k=4,
    experts=8,
    slots=4,
    rank=40,
    k_dim=160,
    n_dim=72,
    offset=8,
    blocks=(16, 32, 64),
    block_ms=(16, 32),
    split_k=4,
    warps=(4,),
    stages=(2,),
)
GPU_SIZES = Sizes(
    m=600,
    top_k=8,
    experts=64,
    slots=8,
    rank=72,
    k_dim=1100,
    n_dim=600,
    offset=64,
    blocks=(16, 32, 64, 128),
    block_ms=(16, 32, 64),
    split_k=8,
    warps=(2, 4, 8),
    stages=(1, 2, 3, 4),
    config_pool=_pool(),
    classes=Classes(),
)


# ---- derived sizes ---------------------------------------------------------------------------------
# Sizes the kernels derive from the knobs. Index arithmetic goes wrong at their multiples, which plain
# draws of m and k rarely hit (one past a 32-pair chunk is ~1 CPU case in 700), so `generate` aims at one
# below, at and one above them; fuzz.space.coverage records which were hit.
OFFSETS = (0, -1, 1)  # at the multiple first: the simplest
TARGETS = ("chunk", "block", "pad", "group", "cols")


def align_chunk(interpreter: bool) -> int:
    """Routed pairs per program of the Triton align (kernels.align.CHUNK on that kind of machine)."""
    return CHUNK_INTERPRETED if interpreter else CHUNK_COMPILED


def boundary_offset(value: int, multiple: int) -> int | None:
    """-1, 0 or +1 when `value` is that far from a positive multiple of `multiple`, else None."""
    if multiple < 2 or value < multiple - 1:
        return None
    r = value % multiple
    return 0 if r == 0 else 1 if r == 1 else -1 if r == multiple - 1 else None


def _launch_blocks_fn(c: Case):
    """m -> top_k -> the m extent of the kernels' grid (num_pid_m of kernels.moe_lora._launch) for c's other knobs."""
    bm, e, slots, slack = c.config.block_m, c.num_experts, c.num_slots, c.align_slack

    def blocks(m: int, k: int) -> int:
        mk = m * k
        width = padded_length(mk, e, bm) // bm + slack
        return min((slots + 1) * width, max_used_blocks(mk, slots * e, bm))

    return blocks


def grid_n(c: Case, stage: str, tile: TileConfig) -> int:
    """The n extent of a stage's grid: cdiv(columns, BLOCK_N * n_tiles); columns are S*R for shrink."""
    cols = c.rank * c.num_slices if stage == "shrink" else c.n_dim
    return -(-cols // (tile.block_n * tile.n_tiles))


def launch_blocks(c: Case) -> int:
    return _launch_blocks_fn(c)(c.m, c.top_k)


def derived_values(c: Case, interpreter: bool) -> dict:
    """name -> (value, multiple) of every derived size whose -1/0/+1 boundary generate() aims at."""
    bm, mk = c.config.block_m, c.m * c.top_k
    out = {
        "chunk": (mk, align_chunk(interpreter)),
        "block": (mk, bm),
        "pad": (mk + c.num_experts * (bm - 1), bm),
    }  # at a multiple: P equals the unrounded length
    for stage in ("shrink", "expand"):
        t = getattr(c.config, stage)
        out[f"group.{stage}"] = (launch_blocks(c), t.group_size_m)
        cols = c.rank * c.num_slices if stage == "shrink" else c.n_dim
        out[f"cols.{stage}"] = (cols, t.block_n * t.n_tiles)  # grid n extent = cdiv(cols, BLOCK_N * n_tiles)
    return out


def _pick(src: Source, options: list):
    return src.choice(options) if options else None


def _aim_pairs(src: Source, c: Case, sizes: Sizes, value, multiple: int, d: int, fixed: bool = False) -> Case:
    """(m, top_k) with value(m, k) at offset d of a multiple: with the drawn top_k if possible, else any (but
    a compile class fixes top_k)."""
    for ks in ((c.top_k,),) if fixed else ((c.top_k,), range(1, sizes.top_k + 1)):
        hit = _pick(
            src, [(m, k) for k in ks for m in range(1, sizes.m + 1) if boundary_offset(value(m, k), multiple) == d]
        )
        if hit:
            return c.replace(m=hit[0], top_k=hit[1])
    return c


def _aim(src: Source, c: Case, sizes: Sizes, target: str, d: int, interpreter: bool, fixed: bool = False) -> Case:
    """Move m/top_k (or N, R, a group size) so that the target derived size sits at offset d. fixed: c is in a
    compile class (see Classes): move only what keeps it there."""
    cfg = c.config
    bm = cfg.block_m
    if target == "chunk":
        if not fixed:
            c = c.replace(config=dataclasses.replace(cfg, align="triton"))  # the only align with chunks
        return _aim_pairs(src, c, sizes, lambda m, k: m * k, align_chunk(interpreter), d, fixed)
    if target == "block":
        return _aim_pairs(src, c, sizes, lambda m, k: m * k, bm, d, fixed)
    if target == "pad":
        return _aim_pairs(src, c, sizes, lambda m, k: m * k + c.num_experts * (bm - 1), bm, d, fixed)
    pooled = bool(sizes.config_pool) or fixed  # configs from a bounded pool (compiled kernels reused): keep them
    if target == "group":  # grid m extent vs GROUP_SIZE_M: is the last group of the grouped order partial?
        stage = src.choice(("expand", "shrink"))
        if pooled and getattr(cfg, stage).group_size_m == 1:
            stage = "shrink" if stage == "expand" else "expand"
        tile = getattr(cfg, stage)
        if tile.group_size_m == 1 or (fixed and grid_n(c, stage, tile) < 2):
            if pooled:
                return c
            tile = dataclasses.replace(tile, group_size_m=src.choice((2, 4, 8)))
        lo = min(sizes.blocks) if not pooled else tile.block_n * tile.n_tiles
        if grid_n(c, stage, tile) < 2:  # one n tile: the grouped order is the plain one, nothing to test
            tile = tile if pooled else dataclasses.replace(tile, block_n=lo, n_tiles=1)
            if stage == "expand" and c.n_dim <= lo:
                c = c.replace(n_dim=src.integer(lo + 1, max(lo + 1, sizes.n_dim)))
            elif stage == "shrink" and c.rank * c.num_slices <= lo:
                r = src.integer(lo // c.num_slices + 1, max(lo // c.num_slices + 1, sizes.rank))
                c = c.replace(rank=r, real_rank=min(c.real_rank, r))
        c = c.replace(config=dataclasses.replace(cfg, **{stage: tile}))
        # the grid bounds the used blocks from above; only a tiny batch whose pairs open distinct (slot, expert)
        # groups fills it, so that the last group holds real blocks: every token on a slot, distinct experts,
        # the fewest tokens that put the bound where aimed (pairs of one token never share a group)
        if not fixed and c.num_slots * c.num_experts <= 2 * tile.group_size_m:  # room for more groups than one
            c = c.replace(num_experts=max(c.num_experts, min(sizes.experts, 2 * tile.group_size_m)))
        c = c.replace(slotting="no_base", routing="distinct" if c.top_k <= c.num_experts else c.routing)
        blocks = _launch_blocks_fn(c)
        tiny = [
            (m, k)
            for m in range(1, sizes.m + 1)
            for k in ((c.top_k,) if fixed else range(min(sizes.top_k, c.num_experts), 0, -1))
            if m * k < bm
            and m * k <= c.num_slots * c.num_experts
            and boundary_offset(blocks(m, k), tile.group_size_m) == d
        ]
        if tiny:
            return c.replace(m=tiny[0][0], top_k=tiny[0][1], routing="distinct")
        return _aim_pairs(src, c, sizes, blocks, tile.group_size_m, d, fixed)
    stage = src.choice(("expand", "shrink"))  # "cols": grid n extent vs BLOCK_N * n_tiles
    tile = getattr(cfg, stage)

    def keeps(new: int, old: int) -> bool:
        return not fixed or same_class(new, old)

    for n_tiles in dict.fromkeys((tile.n_tiles,) if pooled else (tile.n_tiles, 1)):
        width = tile.block_n * n_tiles
        if stage == "expand":
            ns = range(1, sizes.n_dim + 1)
            n = _pick(src, [n for n in ns if boundary_offset(n, width) == d and keeps(n, c.n_dim)])
            moved = n and c.replace(n_dim=n)
        else:
            r = _pick(
                src,
                [
                    r
                    for r in range(1, sizes.rank + 1)
                    if boundary_offset(r * c.num_slices, width) == d and keeps(r, c.rank)
                ],
            )
            moved = r and c.replace(rank=r, real_rank=min(c.real_rank, r))
        if moved:
            new_tile = dataclasses.replace(tile, n_tiles=n_tiles)
            return moved.replace(config=dataclasses.replace(cfg, **{stage: new_tile}))
    return c


def _rarely(src: Source, n: int) -> bool:
    """True about once in n draws (uniform: RandomSource.integer leans on the ends of its range)."""
    return src.choice((False,) * (n - 1) + (True,))


EMPTY_EVERY = 25  # empty batches and all-base slotting: edges to keep, but cases that exercise no routed pair
ALL_BASE_EVERY = 50


def generate(src: Source, sizes: Sizes, *, interpreter: bool, seed: int, proto: Case | None = None) -> Case:
    """Draw one valid case; validity holds by construction (no rejection).

    7 cases in 11 aim a derived size (M*k against align's chunk and BLOCK_M, the unrounded padded length,
    the grid's m extent against GROUP_SIZE_M, its n extent against BLOCK_N * n_tiles; the chunk and the
    grouped order twice as often) at one below, at, or one above a multiple, and 1 in 3 puts E one off a
    power of two. Cases with no routed pair on an enabled slot are kept rare (~7%): an empty
    batch 1 in 25 (a required edge), all-base slotting 1 in 50, never every slot disabled, one_slot never on a
    disabled slot.
    """
    dtype = src.choice(DTYPES)
    top_k = src.integer(1, sizes.top_k)
    experts = src.integer(1, sizes.experts)
    if _rarely(src, 3):  # one off a power of two: align pads E to one (plain draws give ~6% non-powers)
        experts = src.choice(
            [
                e
                for j in range(1, sizes.experts.bit_length() + 1)
                for e in ((1 << j) - 1, (1 << j) + 1)
                if 3 <= e <= sizes.experts
            ]
        )
    slots = src.integer(1, sizes.slots)
    rank = src.integer(1, sizes.rank)

    k_dim, n_dim = src.integer(1, sizes.k_dim), src.integer(1, sizes.n_dim)
    num_slices = src.integer(1, 2)

    def block(dim: int, smaller: bool = False):
        """Half the time (always if `smaller`) a block smaller than the dimension, so multi-tile loops and
        tails run."""
        small = tuple(b for b in sizes.blocks if b < dim)
        return src.choice(small) if small and (smaller or src.flag()) else src.choice(sizes.blocks)

    def tile(out_dim: int, reduction: int, split: bool, expand: bool) -> TileConfig:
        limited = expand and interpreter and interpreter_limit(dtype, 2, bf16_atomics_ok()) is not None
        split_hi = 1 if limited else sizes.split_k
        split_k = src.integer(1, split_hi) if split else 1
        # a split-K case whose reduction fits one block leaves every chunk but the first empty: wasted
        return TileConfig(
            block_n=block(out_dim),
            block_k=block(reduction, smaller=split_k > 1),
            group_size_m=src.choice((1, 2, 4, 8)),
            split_k=split_k,
            num_warps=src.choice(sizes.warps),
            num_stages=src.choice(sizes.stages),
            n_tiles=src.choice((1, 1, 2, 3)),
        )

    slotting = "all_base" if _rarely(src, ALL_BASE_EVERY) else src.choice(SLOTTINGS[:-1])
    disabled = () if slotting == "one_slot" else tuple(s for s in range(slots) if _rarely(src, 8))
    case = Case(
        seed=seed,
        dtype=dtype,
        m=src.integer(1, sizes.m),
        top_k=top_k,
        num_experts=experts,
        num_slots=slots,
        rank=rank,
        real_rank=src.integer(1, rank) if src.flag() else rank,
        k_dim=k_dim,
        n_dim=n_dim,
        num_slices=num_slices,
        layout=src.choice(LAYOUTS),
        mul_routed_weight=src.flag(),
        offset=src.integer(0, sizes.offset),
        extra_cols=src.integer(0, 4),
        routing=src.choice(ROUTINGS),
        slotting=slotting,
        disabled=disabled[: slots - 1],  # one slot stays enabled
        strided=src.flag(),
        align_slack=src.choice((0, 0, 1, 3)),
        config=(
            src.choice(sizes.config_pool)
            if sizes.config_pool
            else MoeLoraConfig(
                block_m=src.choice(sizes.block_ms),
                shrink=tile(rank * num_slices, k_dim, src.flag(), False),  # S*R columns
                expand=tile(n_dim, rank, src.flag(), True),
            )
        ),
    )
    case = case.replace(config=dataclasses.replace(case.config, align=src.choice(ALIGN_IMPLS)))
    if proto is not None:
        case = in_class(src, case, proto, sizes)
    target = src.choice((None,) * 4 + TARGETS + ("chunk", "group"))  # the Triton align and grouped order: rare paths
    if target:
        case = _aim(src, case, sizes, target, src.choice(OFFSETS), interpreter, fixed=proto is not None)
    if case.routing == "distinct" and case.top_k > case.num_experts:
        case = case.replace(routing="uniform")
    if case.slotting == "all_with_base" and case.m <= case.num_slots:  # too few tokens: the base one alone
        case = case.replace(slotting="no_base")
    if _rarely(src, EMPTY_EVERY):
        case = case.replace(m=0)
    if _rarely(src, 8) and proto is None:  # what callers get without a config: the per-shape heuristic, fuzzed too
        c = case
        case = c.replace(
            config=dataclasses.replace(
                default_config(c.m * c.top_k, c.rank, c.k_dim, c.n_dim, c.num_experts, c.num_slots, c.num_slices),
                align=c.config.align,
            )
        )
    return case.validate(interpreter)
