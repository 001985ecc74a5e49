"""The values of a case's tensors, element by element from its seed (fuzz.data.counter_rng): x, the LoRA
weights, out's starting values, the routed weights, the routing (topk ids) and the slot of each token. Each
writer fills a destination view and returns its names for the allocator (fuzz.data.tensors).
"""

from __future__ import annotations

import torch
from moe_lora_fuzz.fuzz.data import counter_rng as rng
from moe_lora_fuzz.fuzz.space.case import Case

WEIGHT_LO, WEIGHT_HI = 209716, 1887436  # routed weights n * 2^-21, n in [ceil(0.1 * 2^21), floor(0.9 * 2^21)]


# ---- the case's data (SPEC §6: signed, no zeros, scaled so that t = A x and d = B t are O(1)) ------------
# A writer fills its view, or returns requests for counter_rng.generate: (dest, key, exponent) for signed values,
# Hashed for hash grids (routing, slots, routed weights): the allocator hashes all of a tiny case in one pass.
def write_x(c: Case, dest: torch.Tensor) -> list:
    """x ~ 1, coordinates (m, j, column): per-token rows are j = 0."""
    grid = dest.view(c.m, c.top_k, c.k_dim) if c.layout == "per_routed" else dest.unsqueeze(1)
    return [(grid, rng.stream_key(c.seed, "x"), 0)]


def write_lora_a(c: Case, s: int, dest: torch.Tensor) -> list:
    """(L, E, R, K), ~ K^-0.5 as a power of two; rows r >= real_rank zero."""
    return [
        rng.Const(dest[:, :, c.real_rank :], 0),
        (dest[:, :, : c.real_rank], rng.stream_key(c.seed, f"lora_a[{s}]"), rng.pow2_scale(c.k_dim**-0.5)),
    ]


def write_lora_b(c: Case, s: int, dest: torch.Tensor) -> list:
    """(L, E, N, R), ~ real_rank^-0.5 as a power of two; columns r >= real_rank zero."""
    return [
        rng.Const(dest[..., c.real_rank :], 0),
        (dest[..., : c.real_rank], rng.stream_key(c.seed, f"lora_b[{s}]"), rng.pow2_scale(c.real_rank**-0.5)),
    ]


def write_out0(c: Case, dest: torch.Tensor) -> list:
    return [(dest, rng.stream_key(c.seed, "out"), -1)]


def write_weights(c: Case, dest: torch.Tensor) -> list:
    """Routed weights in [0.1, 0.9] (never 0 or 1): n * 2^-21, exact in float32, rounded once to the dtype."""
    return [rng.Grid(dest, rng.stream_key(c.seed, "topk_weights"), WEIGHT_LO, WEIGHT_HI, -21)]


def write_enabled(c: Case, dest: torch.Tensor) -> list:
    """adapter_enabled: 1, and 0 at the disabled slots (a fill per run of equal flags)."""
    flags = [0 if s in c.disabled else 1 for s in range(c.num_slots)]
    runs, lo = [], 0
    for hi in range(1, len(flags) + 1):
        if hi == len(flags) or flags[hi] != flags[lo]:
            runs.append(rng.Const(dest[lo:hi], flags[lo]))
            lo = hi
    return runs


def write_ids(c: Case, dest: torch.Tensor) -> list:
    """topk_ids: hashed with the rest of the case when its grids fit one part, else by `routing` in parts."""
    if c.m * c.top_k * c.num_experts > rng.chunk(dest.device):
        dest.copy_(routing(c, dest.device))
        return []

    def hashed() -> rng.Hashed:
        grids, rows = _routing_part(c, 0, c.m, dest.device)
        return rng.Hashed(grids, lambda hs: dest.copy_(rows(hs)), dest.device)

    E, P = c.num_experts, rng.axis_multiplier
    if c.routing == "uniform":  # the expert with the smallest hash of (m, j, e): as _routing_part
        return [rng.Argmin(dest, rng.stream_key(c.seed, "topk_ids"), (P(0), P(1)), P(2), 0, E, 0, hashed)]
    if c.routing == "one_hot":  # one expert e with the smallest hash of (e,) for every pair
        return [rng.Argmin(dest, rng.stream_key(c.seed, "topk_ids.one_hot"), (0, 0), P(0), 0, E, 0, hashed)]
    if c.routing == "distinct":  # column j: the expert with the j-th smallest hash of (m, e)
        key = rng.stream_key(c.seed, "topk_ids.distinct")
        return [rng.Argmin(dest, key, (P(0), 0), P(1), 0, E, 0, hashed, ranked=c.top_k)]
    return [hashed()]


def write_lanes(c: Case, dest: torch.Tensor) -> list:
    """token_lora: hashed with the rest of the case when its grids fit one part, else by `slots` in parts."""
    if c.slotting == "all_base":
        return [rng.Const(dest, -1)]
    if c.m * (c.num_slots + 2) > rng.chunk(dest.device):
        dest.copy_(slots(c, dest.device))
        return []

    def hashed() -> rng.Hashed:
        grids, rows = _slot_part(c, 0, c.m, dest.device)
        place, more = _slot_positions(c, dest.device)
        return rng.Hashed(
            grids + more, lambda hs: dest.copy_(place(rows(hs[: len(grids)]), hs[len(grids) :])), dest.device
        )

    L, P = c.num_slots, rng.axis_multiplier
    if c.slotting == "one_slot":  # the slot with the smallest hash of (l,) for every token: as _slot_part
        return [rng.Argmin(dest, rng.stream_key(c.seed, "token_lora.one"), (0,), P(0), 0, L, 0, hashed)]
    if c.slotting in ("random", "no_base"):  # column l + 1 of (m, l + 1) holds slot l, column 0 the base (-1)
        first = 1 if c.slotting == "no_base" else 0
        return [rng.Argmin(dest, rng.stream_key(c.seed, "token_lora"), (P(0),), P(1), first, L + 1, -1, hashed)]
    return [hashed()]


def _rows(m: int, per_row: int, device):
    """Token ranges of at most rng.chunk(device) hashed elements (bounded temporaries for large M * E)."""
    step = max(1, rng.chunk(device) // max(1, per_row))
    for lo in range(0, m, step):
        yield lo, min(m, lo + step)


def _tokens(lo: int, hi: int, device):
    """The token axis of a grid: a size when it starts at 0 (the generator's cached index terms), else indices."""
    return hi if lo == 0 else torch.arange(lo, hi, dtype=torch.int64, device=device)


def _first_by_hash(h: torch.Tensor, n: int, device) -> torch.Tensor:
    """The id in [0, n) with the smallest hash, as a 0-d tensor (no host sync), for a choice made once per case."""
    return rng.keys(h, torch.arange(n, dtype=torch.int64, device=device)).argmin()


def _routing_part(c: Case, lo: int, hi: int, device) -> tuple:
    """(hash grids, function of their hashes giving topk_ids rows [lo, hi) as int64). Every grid spans all E
    experts: a subset of experts (sparse's hot pool) reads its columns, the same hashes as a grid over it."""
    k, E = c.top_k, c.num_experts
    experts = torch.arange(E, dtype=torch.int64, device=device)
    tokens = _tokens(lo, hi, device)
    if c.routing == "one_hot":
        return [(rng.stream_key(c.seed, "topk_ids.one_hot"), [E])], lambda hs: _first_by_hash(hs[0], E, device).expand(
            hi - lo, k
        )
    if c.routing == "distinct":

        def distinct(hs: list) -> torch.Tensor:
            return torch.topk(rng.keys(hs[0], experts), k, dim=1, largest=False, sorted=True).indices

        return [(rng.stream_key(c.seed, "topk_ids.distinct"), [tokens, E])], distinct
    grids = [(rng.stream_key(c.seed, "topk_ids"), [tokens, k, E])]
    if c.routing != "sparse":
        return grids, lambda hs: rng.keys(hs[0], experts).argmin(dim=2)

    def sparse(hs: list) -> torch.Tensor:  # uniform over the max(1, E // 4) experts with the smallest hashes
        pool = torch.argsort(rng.keys(hs[1], experts))[: max(1, E // 4)]
        return pool[rng.keys(hs[0][:, :, pool], pool).argmin(dim=2)]

    return grids + [(rng.stream_key(c.seed, "topk_ids.hot"), [E])], sparse


def routing(c: Case, device) -> torch.Tensor:
    """topk_ids (M, k) int32 per c.routing (see the module docstring for what moves when E shrinks)."""
    ids = torch.empty((c.m, c.top_k), dtype=torch.int64, device=device)
    for lo, hi in _rows(c.m, c.top_k * c.num_experts, device):
        grids, rows = _routing_part(c, lo, hi, device)
        ids[lo:hi] = rows(rng.hash_grids(grids, device))
    return ids.to(torch.int32)


def _slot_part(c: Case, lo: int, hi: int, device) -> tuple:
    """(hash grids, function of their hashes giving token_lora rows [lo, hi) as int64), all but 'all_base'.
    Columns of the grid: l + 1 holds slot l, column 0 the base model (-1); 'no_base' reads columns 1..L."""
    L = c.num_slots
    if c.slotting == "one_slot":
        return [(rng.stream_key(c.seed, "token_lora.one"), [L])], lambda hs: _first_by_hash(hs[0], L, device).expand(
            hi - lo
        )
    first = 1 if c.slotting == "no_base" else 0
    cols = torch.arange(first, L + 1, dtype=torch.int64, device=device)

    def pick(hs: list) -> torch.Tensor:
        return cols[rng.keys(hs[0][:, first:], cols).argmin(dim=1)] - 1

    return [(rng.stream_key(c.seed, "token_lora"), [_tokens(lo, hi, device), L + 1])], pick


def _slot_positions(c: Case, device) -> tuple:
    """'all_with_base': -1 and every slot present, at the tokens with the L + 1 smallest position hashes.
    (function of (lanes, hashes) giving the lanes, its grids); other slottings keep the lanes as they are."""
    m, L = c.m, c.num_slots
    if c.slotting != "all_with_base" or not m:
        return (lambda lanes, hs: lanes), []

    def place(lanes: torch.Tensor, hs: list) -> torch.Tensor:
        tokens = torch.arange(m, dtype=torch.int64, device=device)
        first_ranks = torch.argsort(rng.keys(hs[0], tokens, bits=17))[: L + 1]
        lanes[first_ranks] = torch.arange(-1, first_ranks.numel() - 1, dtype=torch.int64, device=device)
        return lanes

    return place, [(rng.stream_key(c.seed, "token_lora.pos"), [m])]


def slots(c: Case, device) -> torch.Tensor:
    """token_lora (M,) int32 per c.slotting."""
    if c.slotting == "all_base":
        return torch.full((c.m,), -1, dtype=torch.int32, device=device)
    lanes = torch.empty(c.m, dtype=torch.int64, device=device)
    for lo, hi in _rows(c.m, c.num_slots + 1, device):
        grids, rows = _slot_part(c, lo, hi, device)
        lanes[lo:hi] = rows(rng.hash_grids(grids, device))
    place, grids = _slot_positions(c, device)
    return place(lanes, rng.hash_grids(grids, device)).to(torch.int32)
