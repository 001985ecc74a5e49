"""What a campaign exercised: knob values, knob combinations and edge conditions (SPEC §3 list)."""

from __future__ import annotations

import math
import time
from collections import Counter

import torch
from moe_lora_fuzz.contract import knobs_of
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import boundary_offset, derived_values, grid_n, launch_blocks
from moe_lora_fuzz.kernels.runtime import INTERPRET

REQUIRED_EDGES = (
    "m_not_block_multiple",
    "k_tail",
    "n_tail",
    "r_tail",
    "m_is_1",
    "empty_batch",
    "expert_without_tokens",
    "all_tokens_one_expert",
    "slot_without_tokens",
    "base_with_every_slot",
    "disabled_adapter_used",
    "duplicate_expert_in_token",
    "real_rank_below_R",
    "offset_and_extra_columns",
    "strided_views",
    "align_buffers_oversized",
    "two_slices",
    "shrink_split_k",
    "expand_split_k",
    "n_tiles_loop",
)
# Derived-size boundaries (fuzz.space.generate aims at them). Reported, with those not reached, under
# "missing_derived_edges"; not (yet) required: the first 100 cases of 6 campaign seeds reached all 16, and
# one 120 s CPU campaign (33 cases on a loaded machine) did too, but that is not yet "reliably".
DERIVED_EDGES = tuple(
    f"{name}{off}"
    for name in (
        "routed_pairs_at_chunk_boundary",
        "routed_pairs_at_block_multiple",
        "unrounded_padded_length_at_block_multiple",
        "grid_m_at_group_multiple",
        "grid_n_at_tile_multiple",
    )
    for off in ("-1", "0", "+1")
) + ("last_group_holds_real_blocks", "triton_align_npow2_experts")
# derived size -> edge name; a value one below / at / one above a multiple adds "-1" / "0" / "+1"
BOUNDARY_EDGES = {
    "chunk": "routed_pairs_at_chunk_boundary",
    "block": "routed_pairs_at_block_multiple",
    "pad": "unrounded_padded_length_at_block_multiple",
    "group.shrink": "grid_m_at_group_multiple",
    "group.expand": "grid_m_at_group_multiple",
    "cols.shrink": "grid_n_at_tile_multiple",
    "cols.expand": "grid_n_at_tile_multiple",
}
OFFSET_NAMES = {-1: "-1", 0: "0", 1: "+1"}


def _bucket(v: int) -> str:
    if v <= 2:
        return str(v)
    lo = 1 << (v.bit_length() - 1)
    return f"{lo}-{2 * lo - 1}"


def case_features(c: Case) -> list[str]:
    cfg = c.config
    f = []
    if c.m % cfg.block_m:
        f.append("m_not_block_multiple")
    if c.k_dim % (cfg.shrink.block_k * cfg.shrink.split_k):
        f.append("k_tail")
    if c.n_dim % cfg.expand.block_n:
        f.append("n_tail")
    if (c.rank * c.num_slices) % cfg.shrink.block_n or c.rank % (cfg.expand.block_k * cfg.expand.split_k):
        f.append("r_tail")
    if c.m == 1:
        f.append("m_is_1")
    if c.m == 0:
        f.append("empty_batch")
    if c.real_rank < c.rank:
        f.append("real_rank_below_R")
    if c.offset > 0 and c.extra_cols > 0:
        f.append("offset_and_extra_columns")
    if c.strided:
        f.append("strided_views")
    if c.align_slack:
        f.append("align_buffers_oversized")
    if c.num_slices == 2:
        f.append("two_slices")
    if cfg.shrink.split_k > 1:
        f.append("shrink_split_k")
    if cfg.expand.split_k > 1:
        f.append("expand_split_k")
    widths = ((cfg.shrink, c.rank * c.num_slices), (cfg.expand, c.n_dim))  # shrink's columns: every slice's R
    if any(t.n_tiles > 1 and width > t.block_n for t, width in widths):
        f.append("n_tiles_loop")  # a program runs more than one BLOCK_N tile
    if c.m > 0:
        triton_align = cfg.align == "triton" or (cfg.align == "auto" and not INTERPRET)  # the one with chunks
        for name, (value, multiple) in derived_values(c, interpreter=INTERPRET).items():
            off = boundary_offset(value, multiple)
            if off is not None and (name != "chunk" or triton_align):
                f.append(BOUNDARY_EDGES[name] + OFFSET_NAMES[off])
        if triton_align and c.num_experts & (c.num_experts - 1):
            f.append("triton_align_npow2_experts")  # its group columns are padded to a power of two
    return sorted(set(f), key=f.index)


def data_features(
    topk_ids: torch.Tensor,
    token_lora: torch.Tensor,
    enabled: torch.Tensor,
    num_experts: int,
    num_slots: int,
    case: Case | None = None,
) -> list[str]:
    """Edges that depend on the drawn data, not only on the knobs (with `case`: also on its config).
    Plain Python over the ids as lists: three reads, where tensor ops cost dozens per case (the fuzz loop's hot
    path; a nightly-sized batch of a few thousand routed pairs takes about a millisecond)."""
    f = []
    if topk_ids.numel() == 0:
        return f
    ids, lanes, on = topk_ids.tolist(), token_lora.tolist(), enabled.tolist()
    active = [lane >= 0 and on[lane] != 0 for lane in lanes]  # tokens whose pairs receive a delta
    if not any(active):
        f.append("no_active_pairs")
    elif case is not None and _last_group_real(case, ids, lanes, active):
        f.append("last_group_holds_real_blocks")
    used = {e for row in ids for e in row}
    if len(used) < num_experts:
        f.append("expert_without_tokens")
    if len(used) == 1:
        f.append("all_tokens_one_expert")
    present = set(lanes)
    if not present.issuperset(range(num_slots)):
        f.append("slot_without_tokens")
    if set(range(-1, num_slots)) <= present:
        f.append("base_with_every_slot")
    if any(s >= 0 and not on[s] for s in present):
        f.append("disabled_adapter_used")
    if len(ids[0]) > 1 and any([len(set(row)) < len(row) for row in ids]):
        f.append("duplicate_expert_in_token")
    return f


def _last_group_real(c: Case, ids: list, lanes: list, active: list) -> bool:
    """Does the last, partial GROUP_SIZE_M group of the grid's m axis hold a block that really runs (in a grid
    of several n tiles, where grouping reorders anything)?
    The grid bounds the used blocks from above, so only tiny batches put real blocks there."""
    bm, e = c.config.block_m, c.num_experts
    per_group = Counter(lane * e + x for lane, row, on in zip(lanes, ids, active, strict=True) if on for x in row)
    used = sum((n + bm - 1) // bm for n in per_group.values())  # blocks of every (slot, expert) group
    grid_m = launch_blocks(c)
    for stage in ("shrink", "expand"):
        t = getattr(c.config, stage)
        g = t.group_size_m
        if g > 1 and grid_m > g and grid_m % g and used > grid_m - grid_m % g and grid_n(c, stage, t) > 1:
            return True  # (with one n tile the grouped order is the plain one)
    return False


def _case_knobs() -> dict:
    """{name: Knob} of the Case fields counted by value, from their metadata, so a new knob cannot be left out:
    all but the opaque seed and the "other" kinds recorded apart (disabled as a count, the config knob by knob)."""
    return {name: k for name, k in knobs_of(Case).items() if k.kind != "other" and not k.opaque}


def ratio_bucket(ratio: float) -> str:
    """The error-to-bound histogram's bin of a case's worst |error| / bound: "0" (exact), "<2^-20", then one
    bin per power of two up to ">=2^4" ("inf" for NaN/Inf); above "2^0" the case failed its bound."""
    if not ratio == ratio or ratio == math.inf:
        return "inf"
    if ratio <= 0:
        return "0"
    e = math.floor(math.log2(ratio))
    return "<2^-20" if e < -20 else ">=2^4" if e >= 4 else f"2^{e}"


RATIO_BINS = ("0", "<2^-20", *(f"2^{e}" for e in range(-20, 4)), ">=2^4", "inf")
TIMELINE_EVERY_S = 5.0  # a (seconds, cases) point of the cases-over-time curve at most this often


class Coverage:
    CASE_KNOBS = _case_knobs()

    def __init__(self):
        self.knobs: dict[str, Counter] = {}
        self.edges: Counter = Counter()
        self.classes: Counter = Counter()
        self.cases = 0
        self.noop = 0  # cases with no routed pair on an enabled slot (empty batch, all base, all disabled)
        self.ratios: dict[str, Counter] = {}  # dtype -> ratio_bucket -> cases (judged on values: pass/mismatch)
        self.first_edges: dict = {}  # required edge -> the number of cases judged when it was first reached
        self.timeline: list = []  # [seconds since the first case, cases judged]
        self.unreachable: list = []  # required edges the implementation cannot reach (fuzz.execution.prelude)
        self._t0 = None

    def add(self, c: Case, data_edges: list[str], verdict=None) -> None:
        """verdict (fuzz.judgement.oracle.Verdict, optional): its error-to-bound ratio goes into the histogram."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if verdict is not None and verdict.kind in ("pass", "mismatch") and c.m > 0:
            self.ratios.setdefault(c.dtype, Counter())[ratio_bucket(verdict.max_ratio)] += 1

        def bump(k, v):
            self.knobs.setdefault(k, Counter())[str(v)] += 1

        for name, k in self.CASE_KNOBS.items():
            v = getattr(c, name)
            bump(name, _bucket(v) if k.kind == "int" else v)
        bump("disabled", len(c.disabled))
        for name, v in c.config.flat().items():  # block_m, align, shrink.<field>, expand.<field>
            bump(name, v)
        self.edges.update(case_features(c) + list(data_edges))
        self.classes[c.coarse_class] += 1
        self.cases += 1
        self.noop += c.m == 0 or "no_active_pairs" in data_edges
        for e in REQUIRED_EDGES:
            if e not in self.first_edges and self.edges[e]:
                self.first_edges[e] = self.cases
        if not self.timeline or now - self._t0 - self.timeline[-1][0] >= TIMELINE_EVERY_S:
            self.timeline.append([round(now - self._t0, 2), self.cases])

    def cases_until_every_edge(self) -> int | None:
        """Cases judged until every required edge the implementation can reach was reached (None: not yet)."""
        want = [e for e in REQUIRED_EDGES if e not in self.unreachable]
        if not all(e in self.first_edges for e in want):
            return None
        return max((self.first_edges[e] for e in want), default=0)

    def missing_edges(self) -> list[str]:
        return [e for e in REQUIRED_EDGES if not self.edges[e]]

    def to_dict(self) -> dict:
        return {
            "knobs": {k: dict(v) for k, v in sorted(self.knobs.items())},
            "edges": dict(self.edges),
            "missing_edges": self.missing_edges(),
            "missing_derived_edges": [e for e in DERIVED_EDGES if not self.edges[e]],
            "combinations": dict(self.classes),
            "noop_cases": self.noop,
            "noop_share": round(self.noop / max(self.cases, 1), 4),
            "ratio_histogram": {d: {b: n[b] for b in RATIO_BINS if n[b]} for d, n in sorted(self.ratios.items())},
            "first_reached": dict(self.first_edges),  # required edge -> cases judged when first reached
            "unreachable_edges": self.unreachable,
            "cases_until_every_edge": self.cases_until_every_edge(),
            "timeline": self.timeline + ([[round(time.monotonic() - self._t0, 2), self.cases]] if self._t0 else []),
        }
