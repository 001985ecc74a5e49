"""A counter-based generator: every value is a pure function of (case seed, stream, element coordinates).

Why: a case's data must be rebuilt bitwise-identically anywhere (a repro file holds only the seed), built on
the device that runs it (no host randn + copy at nightly sizes), and stay put when the minimiser shrinks a
size (a value depends on its element's coordinates, never on the tensor's shape or on how many values were
drawn before it).

How:
- a 64-bit key per (seed, stream name) is derived in Python;
- an element's counter is key + sum_d i_d * P_d (mod 2^64) with a fixed odd 64-bit multiplier per axis,
  then a splitmix64-style finaliser mixes it. Only int64 torch ops (add, mul, xor, and, shift), whose
  results wrap modulo 2^64 the same way on the CPU and on CUDA. torch has no uint64 arithmetic, so a
  logical right shift is an arithmetic shift followed by a mask;
- values come out of the hash with exact arithmetic only: an integer, converted to float32 exactly
  (|v| < 2^24), times a power of two (exact), then one IEEE round-to-nearest-even to the dtype. No
  transcendental functions, so no last-ulp differences between CPU and GPU math libraries.

Distributions:
- `signed`: an Irwin-Hall sum of three 21-bit uniforms, each centred on an odd grid, so the sum v is an
  odd integer in [-3 (2^21 - 1), 3 (2^21 - 1)] (never zero, symmetric, bell-shaped, std 2^21 within
  2^-42). The value is v * 2^(j - 21) for the scale 2^j; in float16 a magnitude below 2^-24 would round to
  zero and is raised to 2^-24 with its sign (the only case where rounding could make a zero);
- `uniform_grid`: an integer in [lo, hi] by a multiply-high of 21 random bits (no modulo bias worth
  noting), used for routed weights n * 2^-21;
- `keys`: unique non-negative int64 sort keys (53 random bits above the candidate's index), so argmin,
  sort and topk are deterministic on every device (no ties).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

_MASK64 = (1 << 64) - 1
# odd 64-bit multipliers, one per coordinate axis (axis 0 first); their low bits are all different
_AXIS = (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03, 0xABC98388FB8FAC03, 0x8CB92BA72F3D8DD7, 0xF1357AEA2E62A9C5)
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finaliser constants
_B21 = 21
_F21 = (1 << _B21) - 1
CHUNK = 1 << 22  # elements hashed per step on a GPU: bounds the int64 temporaries (32 MiB each)
# on the CPU: parts of 2^16 (cache-sized) and 2^20 elements were measured slower than 2^22 on the shared 2-core
# CI machine (each torch op pays a thread-pool wake-up there); a separate knob so that a host can tune it
CPU_CHUNK = 1 << 22


def chunk(device) -> int:
    """Elements hashed per step on `device` (the values never depend on it)."""
    return CPU_CHUNK if torch.device(device).type == "cpu" else CHUNK


def _s64(v: int) -> int:
    """A 64-bit pattern as the int64 with the same bits (torch scalars are signed)."""
    v &= _MASK64
    return v - (1 << 64) if v >> 63 else v


def stream_key(seed: int, name: str) -> int:
    """The 64-bit key of one named stream of a case (e.g. 'lora_a[1]'): independent streams per tensor."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return _s64(int.from_bytes(digest, "little"))


def _srl(h: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic on signed values)."""
    return (h >> s) & ((1 << (64 - s)) - 1)


def mix(h: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser, in place on an int64 tensor (products wrap modulo 2^64)."""
    h ^= _srl(h, 30)
    h *= _s64(_M1)
    h ^= _srl(h, 27)
    h *= _s64(_M2)
    h ^= _srl(h, 31)
    return h


_AXES_CACHE: dict = {}


def _axis_terms(n: int, axis: int, ndim: int, device) -> torch.Tensor:
    """i * P_axis for i in [0, n) (int64, wrapping), shaped to broadcast along `axis` of an ndim grid;
    cached per device: every case reuses them."""
    key = (device, n, axis, ndim)  # a torch.device or a name: either keys its own entries
    t = _AXES_CACHE.get(key)
    if t is None:
        t = torch.arange(n, dtype=torch.int64, device=device) * _s64(_AXIS[axis])  # wraps modulo 2^64
        t = t.view([1] * axis + [-1] + [1] * (ndim - axis - 1))
        if len(_AXES_CACHE) > 4096:
            _AXES_CACHE.clear()
        _AXES_CACHE[key] = t
    return t


_PREFIX_MAX = 1 << 12  # elements of a cached leading-axes grid (small ones repeat from case to case)
_LEAD_CACHE: dict = {}


def _leading_terms(shape: tuple, device) -> torch.Tensor:
    """sum_d i_d * P_d over every axis but the last of an all-sizes grid, shaped (..., 1), without the key;
    cached per device (the key is added last: sums modulo 2^64 do not depend on their order)."""
    nd = len(shape)
    key = (device, shape[:-1], nd)
    t = _LEAD_CACHE.get(key)
    if t is None:
        t = _axis_terms(shape[0], 0, nd, device)
        for axis in range(1, nd - 1):
            t = t + _axis_terms(shape[axis], axis, nd, device)
        if len(_LEAD_CACHE) > 4096:
            _LEAD_CACHE.clear()
        _LEAD_CACHE[key] = t
    return t


def _shape_of(coords: list) -> tuple[tuple, bool]:
    """(the grid's shape, whether every axis is a plain size rather than a tensor of indices)."""
    shape, plain = [], True
    for c in coords:
        if isinstance(c, int):
            shape.append(c)
        else:
            shape.append(c.numel())
            plain = False
    return tuple(shape), plain


def counters(key: int, coords: list, device, out: torch.Tensor | None = None) -> torch.Tensor:
    """key + sum_d i_d * P_d for every element of the grid; `coords` lists, per axis, either a size n
    (indices 0..n-1) or an int64 tensor of indices (a part of the axis). Written into `out` if given."""
    shape, plain = _shape_of(coords)
    return _counters(key, coords, shape, plain, device, out)


def _counters(key: int, coords: list, shape: tuple, plain: bool, device, out: torch.Tensor | None) -> torch.Tensor:
    nd = len(shape)
    if nd == 0:
        return torch.full((), key, dtype=torch.int64, device=device) if out is None else out.fill_(key)
    if plain and nd >= 2 and shape[-1] and 0 < math.prod(shape[:-1]) <= _PREFIX_MAX:  # two ops
        last = _axis_terms(shape[-1], nd - 1, nd, device)
        acc = torch.add(_leading_terms(shape, device), last, out=None if out is None else out.view(shape))
        return acc.add_(key)
    acc = None
    for axis, c in enumerate(coords):
        if isinstance(c, int):
            terms = _axis_terms(c, axis, nd, device)
        else:
            terms = (c.to(device=device, dtype=torch.int64) * _s64(_AXIS[axis])).view(
                [1] * axis + [-1] + [1] * (nd - axis - 1)
            )
        dest = out.view(shape[: axis + 1] + (1,) * (nd - axis - 1)) if out is not None and axis == nd - 1 else None
        acc = torch.add(terms, key, out=dest) if acc is None else torch.add(acc, terms, out=dest)
    return acc if tuple(acc.shape) == shape else acc.expand(shape).contiguous()


def hashes(key: int, coords: list, device) -> torch.Tensor:
    """Mixed 64-bit hashes, one per grid element."""
    return mix(counters(key, coords, device))


def irwin_hall_sum(h: torch.Tensor) -> torch.Tensor:
    """From each hash, S = u_0 + u_1 + u_2 of its three 21-bit fields; v = 2 S + 3 - 3 * 2^21 is then the odd,
    symmetric Irwin-Hall integer sum_i (2 u_i + 1 - 2^21) (formed in float32, exactly, by the caller)."""
    s = h & _F21
    s += (h >> 21) & _F21
    s += (h >> 42) & _F21
    return s


def pow2_scale(scale: float) -> int:
    """The exponent j of the power of two nearest (in log2) to `scale`: scales are exact powers of two,
    so a value's bits do not move when a size (K, real rank) moves its scale within one factor of 2."""
    return round(math.log2(scale))


def _grid_slices(shape: tuple, chunk: int):
    """Split the leading axis so that each part has at most `chunk` elements (one row at least)."""
    row = max(1, math.prod(shape[1:]))
    step = max(1, chunk // row)
    for lo in range(0, shape[0], step):
        yield lo, min(shape[0], lo + step)


def _odd_sums(s: torch.Tensor) -> torch.Tensor:
    """v = 2 S + 3 - 3 * 2^21 in float32, exactly (odd integers below 2^23 in magnitude)."""
    return torch.mul(s, 2.0).add_(3 - 3 * (1 << _B21))


def _values_into(dest: torch.Tensor, v: torch.Tensor, exponent: int) -> None:
    """dest = v * 2^(exponent - 21) for v from _odd_sums: the float32 product is exact (a power of two), then one
    round to nearest even into dest's dtype (the product is written straight into dest: one op)."""
    scale = 2.0 ** (exponent - _B21)
    y = v.view(dest.shape)
    if dest.dtype == torch.float16 and scale <= 2.0**-25:  # |v| * scale could round to 0 in float16
        y = y * scale
        dest.copy_(torch.copysign(y.abs().clamp_(min=2.0**-24), y))
    else:
        torch.mul(y, scale, out=dest)


def signed_into(dest: torch.Tensor, key: int, exponent: int) -> None:
    """Fill `dest` (float16/bfloat16/float32, any strides) with signed values of std 2^exponent, dest[i] a
    function of (key, i) only. Computed on dest's device in parts of the leading axis."""
    generate([(dest, key, exponent)])


@dataclass(frozen=True)
class Hashed:
    """Hash grids a writer needs (key, coords as for counters) and what it does with their hashes (`use`
    receives them in order, once all are mixed). generate() hashes them together with everything else."""

    grids: list
    use: Callable[[list], object]
    device: torch.device


@dataclass(frozen=True)
class Const:
    """A request to fill `dest` (any strides) with `value` (guard bands, zero rows, flags). `hole`: (first, rows,
    width, row_stride), elements of a 1-D contiguous dest left alone, dest[first + r * row_stride + c] for r < rows,
    c < width (a buffer's view inside its guard band, written by someone else)."""

    dest: torch.Tensor
    value: float | int | bool
    hole: tuple | None = None

    def fill(self) -> None:
        """The torch way: one fill, or the pieces around the hole."""
        if self.hole is None:
            self.dest.fill_(self.value)
            return
        first, rows, width, stride = self.hole
        d = self.dest
        if not rows or not width:
            d.fill_(self.value)
            return
        end = first + (rows - 1) * stride + width
        if d.dim() != 1 or d.stride(0) != 1 or not 0 <= first <= end <= d.numel() or stride < width:
            raise ValueError(f"Const: hole {self.hole} must lie in a 1-D contiguous dest of {d.numel()} elements")
        d[:first].fill_(self.value)
        d[end:].fill_(self.value)
        if rows > 1 and stride > width:
            d.as_strided((rows - 1, stride - width), (stride, 1), d.storage_offset() + first + width).fill_(self.value)

    @property
    def device(self) -> torch.device:
        return self.dest.device


@dataclass(frozen=True)
class Grid:
    """A request for dest = uniform_grid(hashes(key, dest's grid), lo, hi) * 2^exponent (exact in float32, then
    rounded once to dest's dtype): the routed weights."""

    dest: torch.Tensor
    key: int
    lo: int
    hi: int
    exponent: int

    @property
    def device(self) -> torch.device:
        return self.dest.device

    def hashed(self) -> Hashed:
        """The same values as a Hashed request (the torch path)."""

        def use(hs: list) -> None:
            self.dest.copy_(torch.mul(uniform_grid(hs[0], self.lo, self.hi), 2.0**self.exponent))

        return Hashed([(self.key, list(self.dest.shape))], use, self.dest.device)


def axis_multiplier(axis: int) -> int:
    """P_axis as an int64: an element's counter is key + sum_d i_d * P_d."""
    return _s64(_AXIS[axis])


@dataclass(frozen=True)
class Argmin:
    """A request for dest[i] = shift + the r in [lo, hi) with the smallest keys(h, r), h the hash of counter
    key + sum_d i_d * mults[d] + r * step (i: dest's coordinates; multiplier 0 for an axis the grid lacks): the
    routing and slot choices. `fallback()` gives the same values as a Hashed request (the torch path)."""

    dest: torch.Tensor
    key: int
    mults: tuple
    step: int
    lo: int
    hi: int
    shift: int
    fallback: Callable[[], Hashed]
    ranked: int = 0  # k > 0: dest's last axis j (of size k) gets the j-th smallest instead (top-k's sorted order)

    @property
    def device(self) -> torch.device:
        return self.dest.device


def hash_grids(grids: list, device) -> list:
    """[hashes(key, coords) for key, coords in grids], in one counters + mix pass over one buffer (the caller
    bounds the total). A grid of a shape seen before differs from it by its key only: one add."""
    return _hash_buffer([(key, coords, *_shape_of(coords)) for key, coords in grids], device)[1]


def _hash_buffer(grids: list, device) -> tuple[torch.Tensor, list]:
    """(the buffer, its grids' views) of hash_grids, for (key, coords, shape, plain) grids."""
    buf = torch.empty(sum([math.prod(g[2]) for g in grids]), dtype=torch.int64, device=device)
    parts, seen, at = [], {}, 0
    for key, coords, shape, plain in grids:
        n = math.prod(shape)
        part = buf[at : at + n]
        at += n
        if plain and n and shape in seen:
            key0, part0 = seen[shape]
            torch.add(part0, _s64(key - key0), out=part)  # wraps modulo 2^64 like the sums themselves
        else:
            _counters(key, coords, shape, plain, device, part)
            if plain and n:
                seen[shape] = (key, part)
        parts.append(part.view(shape))
    mix(buf)
    return buf, parts


def generate(requests: list) -> None:
    """Carry out a case's requests with torch operations: (dest, key, exponent) tuples get signed values
    (signed_into), Hashed ones their hashes, Grid ones routed-weight values, Argmin ones choices, Const ones a fill;
    their destinations must not overlap. Small requests share one hashing pass per batch of at most chunk() elements
    (a tiny case is one pass: one mix for all its tensors, not one per tensor); large signed ones are hashed in
    bounded parts. fuzz.data.fused_gen.generate does the same in one kernel launch on a GPU: the same bytes."""
    if not requests:
        return
    devices = [r[0].device if isinstance(r, tuple) else r.device for r in requests]
    for device in dict.fromkeys(devices):  # one pass per device
        _generate_torch([r for r, d in zip(requests, devices, strict=True) if d == device], device)


def _generate_torch(requests: list, device) -> None:
    todo = []
    for r in requests:
        if isinstance(r, Const):
            r.fill()
        else:
            todo.append(r.hashed() if isinstance(r, Grid) else r.fallback() if isinstance(r, Argmin) else r)
    requests = todo
    limit = chunk(device)
    batches, total, large = [[]], 0, []
    for r in requests:  # [signed requests, hashed requests, grids] per batch of at most `limit` elements
        if isinstance(r, Hashed):
            grids = [(key, coords, *_shape_of(coords)) for key, coords in r.grids]
            n = sum([math.prod(g[2]) for g in grids])
        else:
            n = r[0].numel()
            if n > limit:
                large.append(r)  # below, in parts
                continue
            if not n:
                continue
        if batches[-1] and total + n > limit:
            batches.append([])
            total = 0
        batches[-1].append((r, grids) if isinstance(r, Hashed) else r)
        total += n
    for batch in (b for b in batches if b):
        signed = [r for r in batch if len(r) == 3]  # (dest, key, exponent)
        hashed = [r for r in batch if len(r) == 2]  # (Hashed, its grids with their shapes)
        grids = [(key, dest.shape, tuple(dest.shape), True) for dest, key, _ in signed]
        for _, more in hashed:
            grids += more
        buf, parts = _hash_buffer(grids, device)
        if signed:  # the signed grids lead the buffer: one Irwin-Hall pass over all of them
            v, at = _odd_sums(irwin_hall_sum(buf[: sum([dest.numel() for dest, _, _ in signed])])), 0
            for dest, _, exponent in signed:
                _values_into(dest, v[at : at + dest.numel()], exponent)
                at += dest.numel()
        at = len(signed)
        for r, more in hashed:
            r.use(parts[at : at + len(more)])
            at += len(more)
    for dest, key, exponent in large:
        for lo, hi in _grid_slices(tuple(dest.shape), chunk(dest.device)):
            idx = torch.arange(lo, hi, dtype=torch.int64, device=dest.device)
            s = irwin_hall_sum(hashes(key, [idx] + list(dest.shape[1:]), dest.device))
            _values_into(dest[lo:hi], _odd_sums(s), exponent)


def uniform_grid(h: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Integers in [lo, hi] (int64) from hashes: lo + floor(u * (hi - lo + 1) / 2^21), u = 21 random bits."""
    span = hi - lo + 1
    if span >= 1 << 31:
        raise ValueError(f"uniform_grid: span {span} must be below 2^31 (products must fit int64)")
    return ((_srl(h, 43) * span) >> _B21) + lo


def keys(h: torch.Tensor, index: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Unique non-negative sort keys: 63 - bits random bits above the candidate's index (< 2^bits), so
    argmin / sort / topk have no ties and give the same answer on every device."""
    return _srl(h, 1 + bits) * (1 << bits) + index
