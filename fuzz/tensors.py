"""Materialise a Case into tensors, each a view inside a guarded allocation.

Inputs live inside buffers whose margins (and stride padding) hold NaN, so an out-of-bounds read turns
into a NaN (or, re-run with another fill, a changed value) in the output. Buffers the kernels write have
margins holding a sentinel, so an out-of-bounds write shows as a changed margin. The interior of the
workspace (intermediate) starts poisoned, so reading what was never written is visible too.

All data comes from one torch.Generator seeded by the case on the CPU and is then moved to the device:
the same case gives bitwise identical inputs on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kernels.align import AlignBuffers, padded_length

from .case import Case

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
OUT_SENTINEL = -7.25  # exactly representable in every dtype, unlikely as a result
INT_SENTINEL = -(2**30) + 7


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
    """A view into a larger allocation; everything of `base` outside the view is the guard. Every base
    is a slice of one byte arena per case, at byte `offset`."""

    name: str
    base: torch.Tensor  # flat
    view: torch.Tensor
    is_input: bool
    offset: int = 0

    def base_in(self, arena: torch.Tensor) -> torch.Tensor:
        """This buffer's base inside an arena of the same layout (the live one, or a snapshot)."""
        return arena[self.offset: self.offset + self.base.numel() * self.base.element_size()].view(self.base.dtype)

    def view_in(self, arena: torch.Tensor) -> torch.Tensor:
        base = self.base_in(arena)
        return base.as_strided(self.view.shape, self.view.stride(),
                               base.storage_offset() + self.view.storage_offset() - self.base.storage_offset())

    def guard_mask(self) -> torch.Tensor:
        inside = torch.zeros(self.base.numel(), dtype=torch.bool, device=self.base.device)
        idx = torch.arange(self.base.numel(), device=self.base.device)
        inside[torch.as_strided(idx, self.view.shape, self.view.stride(),
                                self.view.storage_offset() - self.base.storage_offset()).reshape(-1)] = True
        return ~inside


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
    writable: torch.Tensor | None = None  # bool per arena byte: inside a written buffer's view
    host: dict = field(default_factory=dict)  # CPU copies of the inputs by name: references read these

    def op_kwargs(self) -> dict:
        """The op's arguments by their SPEC §2 names: what every implementation receives."""
        return dict(out=self.out, x=self.x, topk_ids=self.topk_ids, topk_weights=self.topk_weights,
                    token_lora=self.token_lora, adapter_enabled=self.adapter_enabled, lora_a=self.lora_a,
                    lora_b=self.lora_b, mul_routed_weight=self.case.mul_routed_weight, offset=self.case.offset,
                    layout=self.case.layout)

    def host_args(self) -> tuple:
        """The reference arguments (x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b)
        as CPU tensors, read without touching the device."""
        h, s = self.host, self.case.num_slices
        return (h["x"], h["topk_ids"], h["topk_weights"], h["token_lora"], h["adapter_enabled"],
                [h[f"lora_a[{i}]"] for i in range(s)], [h[f"lora_b[{i}]"] for i in range(s)])

    def snapshot(self) -> torch.Tensor:
        return self.arena.clone()


def _signed(gen: torch.Generator, shape, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Signed normal values with no exact zeros after rounding to dtype."""
    v = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    tiny = torch.tensor(scale / 64, dtype=dtype)
    return torch.where(v == 0, tiny, v)


def _routing(case: Case, gen: torch.Generator) -> torch.Tensor:
    m, k, e = case.m, case.top_k, case.num_experts
    if case.routing == "distinct":
        return torch.argsort(torch.rand((m, e), generator=gen), dim=1)[:, :k].to(torch.int32)
    if case.routing == "one_hot":
        return torch.full((m, k), int(torch.randint(e, (1,), generator=gen)), dtype=torch.int32)
    if case.routing == "sparse":  # few hot experts, the rest empty
        hot = torch.randperm(e, generator=gen)[: max(1, e // 4)]
        return hot[torch.randint(len(hot), (m, k), generator=gen)].to(torch.int32)
    return torch.randint(e, (m, k), generator=gen, dtype=torch.int32)  # duplicates within a token allowed


def _slots(case: Case, gen: torch.Generator) -> torch.Tensor:
    m, L = case.m, case.num_slots
    if case.slotting == "all_base":
        return torch.full((m,), -1, dtype=torch.int32)
    if case.slotting == "one_slot":
        return torch.full((m,), int(torch.randint(L, (1,), generator=gen)), dtype=torch.int32)
    lo = 0 if case.slotting == "no_base" else -1
    lanes = torch.randint(lo, L, (m,), generator=gen, dtype=torch.int32)
    if case.slotting == "all_with_base":  # -1 and every slot present, in shuffled positions
        fixed = torch.arange(-1, L, dtype=torch.int32)[: m]
        pos = torch.randperm(m, generator=gen)[: fixed.numel()]
        lanes[pos] = fixed
    return lanes


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_ALIGN = 256  # bytes between bases: views keep the alignment real allocations have


_STAGING: dict = {}  # device -> [reused pinned host buffer, event after its last copy to the device]
_STAGING_MAX = 64 << 20  # larger arenas are built in ordinary memory: pinning gigabytes costs more than it saves


def _staging(size: int, device) -> torch.Tensor:
    """Host memory to build an arena in. For a GPU, a pinned buffer reused from case to case (its copy to
    the device is then one fast DMA), once the previous copy out of it has finished."""
    device = torch.device(device)
    if device.type != "cuda" or size > _STAGING_MAX:
        return torch.empty(size, dtype=torch.uint8)
    slot = _STAGING.setdefault(str(device), [None, None])
    if slot[1] is not None:
        slot[1].synchronize()
    if slot[0] is None or slot[0].numel() < size:
        grown = 2 * (0 if slot[0] is None else slot[0].numel())
        slot[0] = torch.empty(min(max(size, grown), _STAGING_MAX), dtype=torch.uint8, pin_memory=True)
    return slot[0][:size]


def _to_device(staged: torch.Tensor, device) -> torch.Tensor:
    device = torch.device(device)
    if not staged.is_pinned():
        return staged.to(device)
    arena = staged.to(device, non_blocking=True)
    event = torch.cuda.Event()
    event.record()  # the next case waits for it before reusing the pinned buffer
    _STAGING[str(device)][1] = event
    return arena


class _Allocator:
    """Builds every buffer on the CPU, then moves them to the device as one arena in one copy (a handful of
    device operations per case instead of two per buffer: most of the GPU fuzz loop's materialise time)."""

    def __init__(self, case: Case, fill: Fill):
        self.case, self.fill = case, fill
        self.guarded: list[Guarded] = []
        self.size = 0

    def place(self, name: str, data: torch.Tensor, *, is_input: bool, guard_value=None) -> None:
        """Copy `data` into a guarded allocation (on the CPU, until finish). Strided cases pad the last dim
        and start one element past an aligned address (no 16-byte accesses may be assumed)."""
        shape = tuple(data.shape)
        pad = 3 if (self.case.strided and data.dim() >= 2) else 0
        shift = 1 if pad else 0
        padded = shape[:-1] + (shape[-1] + pad,) if shape else shape
        inner = max(1, math.prod(padded))
        # wide enough that a row index running up to k times past the end (topk-row-index) stays inside
        margin = -(-(inner * max(2, self.case.top_k) + 64) // 64) * 64
        if guard_value is None:
            guard_value = self.fill.input_margin if data.is_floating_point() else INT_SENTINEL
        guard_value = self.fill.margins.get(name, guard_value)  # triage: one buffer's margin perturbed
        base = torch.full((margin + inner + margin,), guard_value, dtype=data.dtype)
        view = base[margin + shift: margin + shift + math.prod(padded)].view(padded)
        if pad:
            view = view[..., : shape[-1]]
        view.copy_(data)
        self.guarded.append(Guarded(name, base, view, is_input, self.size))
        self.size += -(-base.numel() * base.element_size() // _ALIGN) * _ALIGN

    def finish(self, device) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """(arena on `device`, writable-byte mask on `device`, views by name, CPU input views by name);
        rebases every Guarded onto the device arena."""
        staged = _staging(self.size, device)
        for g in self.guarded:
            g.base_in(staged).copy_(g.base)
        host = {g.name: g.view for g in self.guarded if g.is_input}
        arena = _to_device(staged, device)
        writable = torch.zeros(self.size, dtype=torch.uint8, device=arena.device)  # filled where it lives
        for g in self.guarded:
            if not g.is_input:  # all bits set on every byte of the view's elements
                as_int = _INT_OF_SIZE[g.base.element_size()]
                Guarded(g.name, g.base.view(as_int), g.view.view(as_int), False, g.offset).view_in(writable).fill_(-1)
        writable = writable.bool()
        for g in self.guarded:
            g.base, g.view = g.base_in(arena), g.view_in(arena)
        if self.fill.guards:
            return arena, writable, {g.name: g.view for g in self.guarded}, host
        bare = {g.name: torch.empty_strided(g.view.shape, g.view.stride(), dtype=g.view.dtype, device=device)
                .copy_(g.view) for g in self.guarded}
        return arena, writable, bare, host


def materialize(case: Case, device="cpu", fill: Fill = Fill()) -> Tensors:
    c = case
    dt = TORCH_DTYPES[c.dtype]
    gen = torch.Generator().manual_seed(c.seed)
    m, k, L, E, R = c.m, c.top_k, c.num_slots, c.num_experts, c.rank
    rows = m * k if c.layout == "per_routed" else m
    alloc = _Allocator(c, fill)
    put = alloc.place

    # data scaled so that t = A x and d = B t are O(1): every bound term stays comparable
    x = _signed(gen, (rows, c.k_dim), 1.0, dt)
    rank_mask = (torch.arange(R) < c.real_rank)
    for s in range(c.num_slices):
        a = _signed(gen, (L, E, R, c.k_dim), c.k_dim ** -0.5, dt) * rank_mask[:, None].to(dt)
        b = _signed(gen, (L, E, c.n_dim, R), c.real_rank ** -0.5, dt) * rank_mask.to(dt)
        put(f"lora_a[{s}]", a, is_input=True)
        put(f"lora_b[{s}]", b, is_input=True)
    weights = (torch.rand((m, k), generator=gen, dtype=torch.float64) * 0.8 + 0.1).to(dt)  # never 0 or 1
    enabled = torch.ones(L, dtype=torch.int32)
    enabled[list(c.disabled)] = 0
    width = c.offset + c.num_slices * c.n_dim + c.extra_cols
    out0 = _signed(gen, (m, k, width), 0.5, dt)
    put("x", x, is_input=True)
    put("topk_ids", _routing(c, gen), is_input=True)
    put("topk_weights", weights, is_input=True)
    put("token_lora", _slots(c, gen), is_input=True)
    put("adapter_enabled", enabled, is_input=True)
    put("out", out0, is_input=False, guard_value=OUT_SENTINEL)
    put("intermediate", torch.full((c.num_slices, m * k, R), fill.workspace_poison), is_input=False,
        guard_value=OUT_SENTINEL)
    _align_buffers(c, alloc)
    arena, writable, v, host = alloc.finish(device)
    return Tensors(
        case=c, x=v["x"], topk_ids=v["topk_ids"], topk_weights=v["topk_weights"], token_lora=v["token_lora"],
        adapter_enabled=v["adapter_enabled"],
        lora_a=[v[f"lora_a[{s}]"] for s in range(c.num_slices)],
        lora_b=[v[f"lora_b[{s}]"] for s in range(c.num_slices)],
        out=v["out"], intermediate=v["intermediate"],
        align=AlignBuffers(v["sorted_token_ids"], v["expert_ids"], v["num_tokens_post_padded"]),
        guarded=alloc.guarded, arena=arena, writable=writable, host=host)


def _align_buffers(c: Case, alloc: _Allocator) -> None:
    bm = c.config.block_m
    p = padded_length(c.m * c.top_k, c.num_experts, bm) + c.align_slack * bm
    poison = torch.full((c.num_slots, p), INT_SENTINEL, dtype=torch.int32)
    alloc.place("sorted_token_ids", poison, is_input=False, guard_value=INT_SENTINEL)
    alloc.place("expert_ids", poison[:, : p // bm].clone(), is_input=False, guard_value=INT_SENTINEL)
    alloc.place("num_tokens_post_padded", torch.full((c.num_slots,), INT_SENTINEL, dtype=torch.int32),
                is_input=False, guard_value=INT_SENTINEL)
