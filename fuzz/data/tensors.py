"""Materialise a Case into tensors, each a view inside a guarded allocation.

Inputs live inside buffers whose margins (and stride padding) hold NaN, so an out-of-bounds read turns
into a NaN (or, re-run with another fill, a changed value) in the output. Buffers the kernels write have
margins holding a sentinel, so an out-of-bounds write shows as a changed margin. The interior of the
workspace (intermediate) starts poisoned, so reading what was never written is visible too.

The data comes from a counter-based generator (fuzz/data/counter_rng.py): every value is a pure function of the
case seed, the tensor and the element's coordinates, bitwise the same on CPU and GPU. So it is built where
it runs (on the device for all but tiny cases: no host randn, no big copy) and a repro rebuilds it anywhere.

Which values move when a size shrinks by one (every other element keeps its bits):
- x[m, j, c] (the per-routed row m*k + j; the per-token row m is (m, 0, c)), lora_a[s][l, e, r, c],
  lora_b[s][l, e, n, r], out0[m, j, c] and topk_weights[m, j] are functions of those coordinates only.
  Scales are exact powers of two: A's is 2^round(-log2(K)/2), B's 2^round(-log2(real_rank)/2), so a smaller
  K or real rank can double every A or B value (when it crosses a power of four) and changes nothing else.
  A's rows and B's columns r >= real_rank are zero.
- topk_ids[m, j]: 'uniform' is the expert e < E with the smallest hash of (m, j, e): a smaller E moves only
  the entries that had E - 1. 'distinct' is each token's top_k smallest hashes of (m, e), in order: a
  smaller E moves, in tokens that had E - 1, that column and the ones after it; a smaller top_k drops the
  last column. 'one_hot' moves only if its expert was E - 1. 'sparse' is 'uniform' restricted to the
  max(1, E // 4) experts with the smallest hashes: a smaller E moves the entries whose expert left that set.
- token_lora[m]: 'random' / 'no_base' take the smallest hash of (m, l) over l in [-1, L) / [0, L): a
  smaller L moves only the tokens that had L - 1. 'one_slot' moves only if its slot was L - 1.
  'all_with_base' gives the tokens with the L + 1 smallest position hashes -1, 0, ..., L - 1 in that
  order, the others as 'random': a smaller M moves those assignments only if token M - 1 was among them;
  a smaller L moves the tokens that had L - 1 and the token that had rank L.
- A smaller M or top_k removes rows or columns; no other element moves.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from moe_lora_fuzz.contract import TORCH_DTYPES, OpArgs, rows_for
from moe_lora_fuzz.fuzz.data import counter_rng as rng
from moe_lora_fuzz.fuzz.data import fused_gen
from moe_lora_fuzz.fuzz.data import tensors_quant as tq
from moe_lora_fuzz.fuzz.data.values import (  # noqa: F401 (routing, slots, the weight range: callers import them from here)
    WEIGHT_HI,
    WEIGHT_LO,
    routing,
    slots,
    write_enabled,
    write_ids,
    write_lanes,
    write_lora_a,
    write_lora_b,
    write_out0,
    write_weights,
    write_x,
)
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.kernels.align import AlignBuffers, padded_length

OUT_SENTINEL = -7.25  # exactly representable in every dtype, unlikely as a result
INT_SENTINEL = -(2**30) + 7
HOST_BUILD_MAX = 1 << 16  # generated elements up to which a GPU case is built on the host (fewer launches)
WHERE = ("auto", "host", "device")  # where materialize builds a case (see there)


@dataclass(frozen=True)
class Fill:
    """What guard margins and the workspace interior hold; the oracle re-runs with others to diagnose."""

    input_margin: float = math.nan
    workspace_poison: float = math.nan
    # False: the implementation gets every buffer as its own exact-size allocation instead of a view into
    # the guarded arena, so that compute-sanitizer sees an out-of-bounds access that a guard band would absorb
    guards: bool = True
    # per-buffer guard values by name, overriding the above (triage: which input is read out of bounds)
    margins: dict = field(default_factory=dict)


@dataclass
class Guarded:
    """A view into a larger allocation, its base; everything of the base outside the view is the guard. Every
    base is a slice of one byte arena per case: `numel` elements of the view's dtype from byte `offset`."""

    name: str
    view: torch.Tensor
    is_input: bool
    offset: int
    numel: int
    typed: torch.Tensor  # the whole arena viewed as the view's dtype: the base is a slice of it, made when asked

    @property
    def base(self) -> torch.Tensor:
        start = self.typed.storage_offset() + self.offset // self.view.element_size()
        return self.typed.as_strided((self.numel,), (1,), start)

    def base_in(self, arena: torch.Tensor) -> torch.Tensor:
        """This buffer's base inside an arena of the same layout (the live one, or a snapshot)."""
        return arena[self.offset : self.offset + self.numel * self.view.element_size()].view(self.view.dtype)

    def view_in(self, arena: torch.Tensor) -> torch.Tensor:
        """The view inside an arena of the same layout: two ops (the arena as this dtype, then the view)."""
        inner = self.view.storage_offset() - self.typed.storage_offset()  # elements from the arena's start
        typed = arena.view(self.view.dtype)
        return typed.as_strided(self.view.shape, self.view.stride(), typed.storage_offset() + inner)

    def guard_mask(self) -> torch.Tensor:
        inside = torch.zeros(self.base.numel(), dtype=torch.bool, device=self.base.device)
        idx = torch.arange(self.base.numel(), device=self.base.device)
        inside[
            torch.as_strided(
                idx, self.view.shape, self.view.stride(), self.view.storage_offset() - self.base.storage_offset()
            ).reshape(-1)
        ] = True
        return ~inside


class HostInputs(Mapping):
    """CPU copies of the inputs by name, made on first access (read them before the implementation runs,
    as the oracle does). A GPU case built on the host already has them: no device-to-host copy; one built
    on the device copies only what is asked (the naive reference asks only on small cases)."""

    def __init__(self, views: dict, built_on_host: dict | None):
        self._views, self._built, self._copies = views, built_on_host or {}, {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._copies:
            view = self._views[name]
            self._copies[name] = (
                self._built[name] if name in self._built else view.clone() if view.device.type == "cpu" else view.cpu()
            )
        return self._copies[name]

    def prefetch(self, names) -> None:
        """Copy several inputs of one dtype to the host in one transfer (one sync on a GPU instead of one each);
        the copies hold the same values as __getitem__'s. Nothing to do on a CPU or for a host-built case."""
        todo = [n for n in names if n not in self._copies and n not in self._built]
        views = [self._views[n] for n in todo]
        if len(views) < 2 or views[0].device.type == "cpu" or len({v.dtype for v in views}) > 1:
            return
        self._copies.update(zip(todo, packed_copy(views), strict=True))

    def __iter__(self):
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)


def packed_copy(views: list, device="cpu") -> list:
    """Contiguous copies of `views` (one dtype) on `device`, made by one concatenation and one transfer."""
    flat = torch.cat([v.reshape(-1) for v in views]).to(device)
    return [part.view(v.shape) for part, v in zip(flat.split([v.numel() for v in views]), views, strict=True)]


@dataclass
class Tensors:
    case: Case
    x: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor
    token_lora: torch.Tensor
    adapter_enabled: torch.Tensor
    lora_a: list
    lora_b: list
    out: torch.Tensor
    intermediate: torch.Tensor
    align: AlignBuffers
    guarded: list = field(default_factory=list)
    arena: torch.Tensor | None = None  # uint8: every guarded base, back to back
    writable: torch.Tensor | None = None  # bool per arena byte, where it was built: inside a written buffer's view
    host: Mapping = field(default_factory=dict)  # CPU copies of the inputs by name (HostInputs): references
    # the host arena a GPU case was built in (its bytes before the call; the implementation gets the device copy)
    built: torch.Tensor | None = None
    guards: bool = True  # False: the views are exact-size allocations (Fill.guards)
    quant: object = None  # contract.QuantArgs of a quantized case (fuzz/data/tensors_quant.py)

    def op(self) -> OpArgs:
        """The op's arguments (SPEC §2): what every implementation receives, and what the references read."""
        c = self.case
        return OpArgs(
            self.out,
            self.x,
            self.topk_ids,
            self.topk_weights,
            self.token_lora,
            self.adapter_enabled,
            self.lora_a,
            self.lora_b,
            c.mul_routed_weight,
            c.offset,
            c.layout,
            self.quant,
        )

    def op_kwargs(self) -> dict:
        """The op's arguments by their SPEC §2 names (the adapter protocol's keywords)."""
        return self.op().kwargs()

    def host_op(self) -> OpArgs:
        """The op's arguments with CPU copies of its inputs (what the naive reference reads; `out` is not one)."""
        h, s = self.host, self.case.num_slices
        return replace(
            self.op(),
            x=h["x"],
            topk_ids=h["topk_ids"],
            topk_weights=h["topk_weights"],
            token_lora=h["token_lora"],
            adapter_enabled=h["adapter_enabled"],
            lora_a=[h[f"lora_a[{i}]"] for i in range(s)],
            lora_b=[h[f"lora_b[{i}]"] for i in range(s)],
            quant=tq.quant_args(self.case, h),
        )

    def snapshot(self, host: bool = True) -> torch.Tensor:
        """The arena's bytes before the call, where the oracle judges them. host=True: a GPU case built on the
        host keeps them there (its host arena is never written: no device op; the oracle then judges on the
        host); any other case gets a clone on the arena's device. `writable` lives where the arena was built."""
        return self.built if host and self.built is not None else self.arena.clone()

    def fresh(self, before: torch.Tensor) -> Tensors:
        """The case's tensors again, in a new arena holding `before` (the bytes it was built with): what
        materialize returns for the same case and fill, without generating anything (the permutation twin)."""
        device = self.arena.device
        arena = before.clone() if before.device == device else _to_device(before, device)
        guarded = _rebound(self.guarded, arena)
        host = HostInputs({g.name: g.view for g in guarded if g.is_input}, None)  # copies of its own, if asked
        return _tensors(self.case, guarded, arena, self.writable, host, None, self.guards)


# ---- the arena ---------------------------------------------------------------------------------------
_ALIGN = 256  # bytes between bases: views keep the alignment real allocations have


_STAGING: dict = {}  # device -> [reused pinned host buffer, event after its last copy to the device]
_STAGING_MAX = 64 << 20  # larger arenas are copied from ordinary memory: pinning gigabytes costs more than it saves


def _staging(size: int, device) -> torch.Tensor:
    """Pinned host memory to copy a host-built arena to a GPU from (one fast DMA), reused from case to case
    once the previous copy out of it has finished."""
    slot = _STAGING.setdefault(str(device), [None, None])
    if slot[1] is not None:
        slot[1].synchronize()
    if slot[0] is None or slot[0].numel() < size:
        grown = 2 * (0 if slot[0] is None else slot[0].numel())
        slot[0] = torch.empty(min(max(size, grown), _STAGING_MAX), dtype=torch.uint8, pin_memory=True)
    return slot[0][:size]


def _to_device(built: torch.Tensor, device) -> torch.Tensor:
    device = torch.device(device)
    if device.type != "cuda":
        return built
    if built.numel() > _STAGING_MAX:
        return built.to(device)
    staged = _staging(built.numel(), device)
    staged.copy_(built)
    arena = staged.to(device, non_blocking=True)
    event = torch.cuda.Event()
    event.record()  # the next case waits for it before reusing the pinned buffer
    _STAGING[str(device)][1] = event
    return arena


@dataclass
class _Slot:
    """One buffer of the arena before it exists: its layout and how to fill its view."""

    name: str
    shape: tuple
    dtype: torch.dtype
    is_input: bool
    guard_value: float
    write: object  # callable(view) or None (the view keeps the guard / poison value)
    interior: float | None
    offset: int  # bytes: where the base starts in the arena
    # in elements of the arena viewed as this dtype: the base [start, start + numel), the view's strides (the
    # padded shape's contiguous ones, as .view() gives them) and its first element
    start: int
    numel: int
    strides: tuple
    first: int

    def guarded(self, typed: dict) -> Guarded:
        """The buffer inside the arena (`typed`: the arena viewed as each dtype, _typed): one op (its view), the
        base made only when asked."""
        arena = typed[self.dtype]
        view = arena.as_strided(self.shape, self.strides, self.first)
        return Guarded(self.name, view, self.is_input, self.offset, self.numel, arena)


@functools.lru_cache(maxsize=4096)
def _contiguous_strides(shape: tuple) -> tuple:
    """The strides .view(shape) gives a contiguous tensor (sizes 0 and 1 count as 1)."""
    strides, step = [], 1
    for d in shape[::-1]:
        strides.append(step)
        step *= d if d > 1 else 1
    return tuple(strides[::-1])


def _typed(arena: torch.Tensor, dtypes) -> dict:
    """{dtype: the byte arena viewed as it} (every base starts at a multiple of _ALIGN bytes)."""
    return {dtype: arena.view(dtype) for dtype in dtypes}


def _rebound(guarded: list, arena: torch.Tensor) -> list:
    """The same buffers, as views into another arena of the same layout (a device copy, a twin's arena)."""
    typed, out = _typed(arena, {g.view.dtype for g in guarded}), []
    for g in guarded:
        flat = typed[g.view.dtype]
        first = g.view.storage_offset() - g.typed.storage_offset()
        view = flat.as_strided(g.view.shape, g.view.stride(), first)
        out.append(Guarded(g.name, view, g.is_input, g.offset, g.numel, flat))
    return out


def _hole(s: _Slot, origin: int, unit: int) -> tuple:
    """A slot's view as a Const hole, in units of 1/unit of its elements from element `origin` of its dtype:
    rows of `width` at a row stride (a view is the contiguous layout of its padded shape)."""
    if not math.prod(s.shape):
        return (0, 0, 0, 0)
    width = s.shape[-1] if s.shape else 1
    stride = s.strides[-2] if len(s.shape) >= 2 else width
    return ((s.first - origin) * unit, math.prod(s.shape[:-1]), width * unit, stride * unit)


class _Allocator:
    """Lays out every buffer of a case in one byte arena, then builds it where it is cheapest: on the device
    (large cases: no host generation and no big copy) or on the host followed by one DMA (tiny cases on a
    GPU: a handful of host ops beat dozens of kernel launches). Both give the same bytes."""

    def __init__(self, case: Case, fill: Fill):
        self.case, self.fill = case, fill
        self.overrun = max(2, case.top_k)  # rows a wrong row index can run past the end, in multiples
        self.slots: list[_Slot] = []
        self.size = 0
        self.generated = 0  # elements written by the generator
        self.mask = None  # the writable mask, when the fused build made it

    def place(
        self,
        name: str,
        shape: tuple,
        dtype: torch.dtype,
        *,
        is_input: bool,
        write=None,
        guard_value=None,
        interior=None,
        slot_margin: bool = False,
    ) -> None:
        """Reserve a guarded allocation. Strided cases pad the last dim and start one element past an aligned
        address (no 16-byte accesses may be assumed). `interior` fills a view that `write` leaves alone."""
        shape = tuple(shape)
        pad = 3 if (self.case.strided and len(shape) >= 2) else 0
        padded = shape[:-1] + (shape[-1] + pad,) if pad else shape
        elements = math.prod(padded)
        inner = elements if elements > 1 else 1
        # wide enough that a row index running up to k times past the end (topk-row-index) stays inside
        margin = -(-(inner * self.overrun + 64) // 64) * 64
        if slot_margin:  # LoRA weights: one slot's block (slot -1 or L, expert -1 or E) and any row overrun
            margin = min(margin, -(-(inner // max(1, shape[0]) + 4096) // 64) * 64)
        if guard_value is None:
            guard_value = self.fill.input_margin if dtype.is_floating_point else INT_SENTINEL
        guard_value = self.fill.margins.get(name, guard_value)  # triage: one buffer's margin perturbed
        if interior is not None and (interior == guard_value or (interior != interior and guard_value != guard_value)):
            interior = None  # the guard fill already wrote it (NaN is NaN)
        start = self.size // dtype.itemsize
        self.slots.append(
            _Slot(
                name,
                shape,
                dtype,
                is_input,
                guard_value,
                write,
                interior,
                self.size,
                start,
                2 * margin + inner,
                _contiguous_strides(padded),
                start + margin + (1 if pad else 0),
            )
        )
        self.size += -(-(margin + inner + margin) * dtype.itemsize // _ALIGN) * _ALIGN
        if write is not None:
            self.generated += math.prod(shape) if pad else elements

    def _guard_runs(self):
        """(dtype, first element, end element, value): neighbouring bases of one dtype and guard value are
        filled by one op (the alignment gaps between them get the guard too; nothing reads them)."""
        runs = []
        for s in self.slots:
            v = s.guard_value
            if runs and runs[-1][0] == s.dtype and (runs[-1][3] == v or (v != v and runs[-1][3] != runs[-1][3])):
                runs[-1][2] = s.start + s.numel
            else:
                runs.append([s.dtype, s.start, s.start + s.numel, v])
        return runs

    def _build(self, arena: torch.Tensor) -> list[Guarded]:
        """Fill the arena: guard bands, interiors, the writers' data. Fused (fuzz.data.fused_gen, a GPU's default):
        the writers' own torch ops, then one kernel launch for everything else and the writable mask (each guard
        band around its view when something writes the view). Otherwise torch ops. The same bytes in every base
        either way (the alignment gaps between bases are not part of any base: nothing reads them)."""
        typed = _typed(arena, {s.dtype for s in self.slots})
        fused = fused_gen.wanted(arena.device)
        if fused:
            self.mask = torch.empty(self.size, dtype=torch.bool, device=arena.device)
        else:
            for dtype, lo, hi, value in self._guard_runs():
                typed[dtype][lo:hi].fill_(value)
        guarded, requests = [], []
        for i, s in enumerate(self.slots):
            g = s.guarded(typed)
            if fused:  # the guard band (and the mask's zeros) around the view, in the one launch
                written = s.write is not None or s.interior is not None
                base = typed[s.dtype][s.start : s.start + s.numel]
                requests.append(rng.Const(base, s.guard_value, _hole(s, s.start, 1) if written else None))
                end = self.slots[i + 1].offset if i + 1 < len(self.slots) else self.size
                hole = None if s.is_input else _hole(s, s.offset // s.dtype.itemsize, s.dtype.itemsize)
                requests.append(rng.Const(self.mask[s.offset : end], False, hole))
            if s.interior is not None:
                if fused and s.write is None:  # disjoint from every other request
                    requests.append(rng.Const(g.view, s.interior))
                else:
                    g.view.fill_(s.interior)
            if s.write is not None:
                made = s.write(g.view)
                requests += made if isinstance(made, list) else []
            guarded.append(g)
        if fused:
            requests += [rng.Const(view, True) for view in self._written(self.mask)]
        fused_gen.generate(requests)
        return guarded

    def _written(self, mask: torch.Tensor) -> list:
        """The parts of a byte mask inside written buffers' views (every byte of each of their elements)."""
        views = []
        for s in self.slots:
            if not s.is_input:  # the view's geometry in bytes, plus an axis over each element's bytes
                size = s.dtype.itemsize
                views.append(
                    mask.as_strided(s.shape + (size,), tuple([st * size for st in s.strides]) + (1,), s.first * size)
                )
        return views

    def _writable(self, device) -> torch.Tensor:
        """bool per arena byte: inside a written buffer's view (every byte of each of its elements)."""
        if self.mask is not None:  # made by the fused build
            return self.mask
        mask = torch.zeros(self.size, dtype=torch.bool, device=device)
        for view in self._written(mask):
            view.fill_(True)
        return mask

    def finish(self, device, where: str = "auto") -> tuple:
        """(arena on `device`, writable-byte mask beside the snapshot, guarded list, host arena or None,
        HostInputs). where: 'auto' | 'host' | 'device' (tests force one or the other)."""
        device = torch.device(device)
        on_host = device.type == "cpu" or where == "host" or (where == "auto" and self.generated <= HOST_BUILD_MAX)
        built = torch.empty(self.size, dtype=torch.uint8, device="cpu" if on_host else device)
        guarded = self._build(built)
        writable = self._writable(built.device)  # where the oracle compares the arena with its snapshot
        arena = _to_device(built, device) if on_host else built
        host_built = None
        if arena is not built:  # the host arena stays alive: its inputs are the host copies
            host_built = {g.name: g.view for g in guarded if g.is_input}
            guarded = _rebound(guarded, arena)
        host = HostInputs({g.name: g.view for g in guarded if g.is_input}, host_built)
        return arena, writable, guarded, (built if arena is not built else None), host


def _tensors(case: Case, guarded: list, arena, writable, host, built, guards: bool) -> Tensors:
    """The Tensors of a built arena; guards=False hands out exact-size copies of every view instead."""
    v = {g.name: g.view for g in guarded}
    if not guards:
        v = {
            g.name: torch.empty_strided(g.view.shape, g.view.stride(), dtype=g.view.dtype, device=arena.device).copy_(
                g.view
            )
            for g in guarded
        }
    c = case
    return Tensors(
        case=c,
        x=v["x"],
        topk_ids=v["topk_ids"],
        topk_weights=v["topk_weights"],
        token_lora=v["token_lora"],
        adapter_enabled=v["adapter_enabled"],
        lora_a=[v[f"lora_a[{s}]"] for s in range(c.num_slices)],
        lora_b=[v[f"lora_b[{s}]"] for s in range(c.num_slices)],
        out=v["out"],
        intermediate=v["intermediate"],
        align=AlignBuffers(v["sorted_token_ids"], v["expert_ids"], v["num_tokens_post_padded"]),
        guarded=guarded,
        arena=arena,
        writable=writable,
        host=host,
        built=built,
        guards=guards,
        quant=tq.quant_args(c, v),
    )


def materialize(case: Case, device="cpu", fill: Fill = Fill(), where: str = "auto") -> Tensors:
    """The case's tensors on `device`. where: 'auto' builds tiny GPU cases on the host (then one DMA) and the
    rest on the device; 'host' / 'device' force one (the bytes are the same either way)."""
    if where not in WHERE:
        raise ValueError(f"materialize: where must be 'auto', 'host' or 'device' (got {where!r})")
    c = case
    dt = TORCH_DTYPES[c.dtype]
    m, k, L, E, R = c.m, c.top_k, c.num_slots, c.num_experts, c.rank
    rows = rows_for(c.layout, m, k)
    alloc = _Allocator(c, fill)
    put = alloc.place
    for s in range(c.num_slices):
        put(
            f"lora_a[{s}]",
            (L, E, R, c.k_dim),
            is_input=True,
            slot_margin=True,
            **tq.weight_slot(c, "a", s, dt, lambda v, s=s: write_lora_a(c, s, v), fill),
        )
        put(
            f"lora_b[{s}]",
            (L, E, c.n_dim, R),
            is_input=True,
            slot_margin=True,
            **tq.weight_slot(c, "b", s, dt, lambda v, s=s: write_lora_b(c, s, v), fill),
        )
    tq.place_scales(c, put)
    width = c.offset + c.num_slices * c.n_dim + c.extra_cols
    put("x", (rows, c.k_dim), dt, is_input=True, write=lambda v: write_x(c, v))
    put("topk_ids", (m, k), torch.int32, is_input=True, write=lambda v: write_ids(c, v))
    put("topk_weights", (m, k), dt, is_input=True, write=lambda v: write_weights(c, v))
    put("token_lora", (m,), torch.int32, is_input=True, write=lambda v: write_lanes(c, v))
    put("adapter_enabled", (L,), torch.int32, is_input=True, write=lambda v: write_enabled(c, v))
    put("out", (m, k, width), dt, is_input=False, guard_value=OUT_SENTINEL, write=lambda v: write_out0(c, v))
    put(
        "intermediate",
        (c.num_slices, m * k, R),
        torch.float32,
        is_input=False,
        guard_value=OUT_SENTINEL,
        interior=fill.workspace_poison,
    )
    bm = c.config.block_m
    p = padded_length(m * k, E, bm) + c.align_slack * bm
    for name, shape in (("sorted_token_ids", (L, p)), ("expert_ids", (L, p // bm)), ("num_tokens_post_padded", (L,))):
        put(name, shape, torch.int32, is_input=False, guard_value=INT_SENTINEL, interior=INT_SENTINEL)
    arena, writable, guarded, built, host = alloc.finish(device, where)
    return _tensors(c, guarded, arena, writable, host, built, fill.guards)
