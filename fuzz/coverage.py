"""What a campaign exercised: knob values, knob combinations and edge conditions (SPEC §3 list)."""

from __future__ import annotations

from collections import Counter

import torch

from .case import Case

REQUIRED_EDGES = (
    "m_not_block_multiple", "k_tail", "n_tail", "r_tail", "m_is_1", "empty_batch", "expert_without_tokens",
    "all_tokens_one_expert", "slot_without_tokens", "base_with_every_slot", "disabled_adapter_used",
    "duplicate_expert_in_token", "real_rank_below_R", "offset_and_extra_columns", "strided_views",
    "align_buffers_oversized", "two_slices", "shrink_split_k", "expand_split_k", "n_tiles_loop",
)


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
    return f


def data_features(topk_ids: torch.Tensor, token_lora: torch.Tensor, enabled: torch.Tensor,
                  num_experts: int, num_slots: int) -> list[str]:
    """Edges that depend on the drawn data, not only on the knobs."""
    f = []
    if topk_ids.numel() == 0:
        return f
    ids, lanes = topk_ids.cpu().long(), token_lora.cpu().long()
    used = torch.bincount(ids.reshape(-1), minlength=num_experts)
    if bool((used == 0).any()):
        f.append("expert_without_tokens")
    if int((used > 0).sum()) == 1:
        f.append("all_tokens_one_expert")
    present = set(lanes.tolist())
    if any(s not in present for s in range(num_slots)):
        f.append("slot_without_tokens")
    if set(range(-1, num_slots)) <= present:
        f.append("base_with_every_slot")
    if any(s >= 0 and not bool(enabled.cpu()[s]) for s in present):
        f.append("disabled_adapter_used")
    srt = ids.sort(dim=1).values
    if bool((srt[:, 1:] == srt[:, :-1]).any()):
        f.append("duplicate_expert_in_token")
    return f


class Coverage:
    KNOBS = ("dtype", "layout", "mul_routed_weight", "num_slices", "routing", "slotting", "strided")
    SIZES = ("m", "top_k", "num_experts", "num_slots", "rank", "k_dim", "n_dim", "offset")

    def __init__(self):
        self.knobs: dict[str, Counter] = {}
        self.edges: Counter = Counter()
        self.classes: Counter = Counter()

    def add(self, c: Case, data_edges: list[str]) -> None:
        def bump(k, v):
            self.knobs.setdefault(k, Counter())[str(v)] += 1
        for k in self.KNOBS:
            bump(k, getattr(c, k))
        for k in self.SIZES:
            bump(k, _bucket(getattr(c, k)))
        for stage in ("shrink", "expand"):
            t = getattr(c.config, stage)
            for k in ("block_n", "block_k", "group_size_m", "split_k", "num_warps", "num_stages"):
                bump(f"{stage}.{k}", getattr(t, k))
        bump("block_m", c.config.block_m)
        bump("align", c.config.align)
        self.edges.update(case_features(c) + list(data_edges))
        self.classes[c.coarse_class] += 1

    def missing_edges(self) -> list[str]:
        return [e for e in REQUIRED_EDGES if not self.edges[e]]

    def to_dict(self) -> dict:
        return {"knobs": {k: dict(v) for k, v in sorted(self.knobs.items())}, "edges": dict(self.edges),
                "missing_edges": self.missing_edges(), "combinations": dict(self.classes)}
