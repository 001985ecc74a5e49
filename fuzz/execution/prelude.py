"""Every required edge early: a campaign's first cases are a prelude drawn to reach every required edge
(fuzz.space.coverage.REQUIRED_EDGES) that the implementation can reach, then the random stream follows.

A short or slow campaign (a loaded 2-core machine judges a dozen CPU cases a minute) would otherwise miss
rare edges (an empty batch comes 1 case in 25, a used disabled adapter about 1 in 10) and the bugs behind
them. The prelude is three templates, each filled from the campaign's seed (dtype, layout, routed weight,
routing and the data seed are drawn, so seeds differ) and checked on the host, without running anything,
against the edges it must reach (the routing and slot ids are built exactly as the case will build them):

- a rich case (the routed weight applied): M off a BLOCK_M multiple, K, N and R tails, real rank below R,
  offset with extra columns, strided views, oversized align buffers, two slices, split-K in both stages, a
  multi-tile n loop, the base model beside every slot, a used disabled adapter and duplicate experts in a
  token (top_k > E);
- a single token on one expert (M = 1, top_k = 1, two slots, two experts);
- an empty batch (M = 0).

A template whose drawn data misses an edge it aims at is drawn again with another data seed (at most
TRIES times); an edge the implementation cannot reach (fuzz.targets.impls.ImplProfile.fit holds a knob it does not
take, e.g. split-K for an implementation without a launch configuration) is left to the coverage report.
The prelude takes case indices 0, 1, 2 of the stream (`runner.case_for`), so shards of one campaign share
it as they share the stream: the union of the shards runs it once.
"""

from __future__ import annotations

import dataclasses

import torch
from moe_lora_fuzz.contract import DTYPES, LAYOUTS, interpreter_limit
from moe_lora_fuzz.fuzz.runtime.interpreter import bf16_atomics_ok
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES, case_features, data_features
from moe_lora_fuzz.fuzz.space.generate import RandomSource, Sizes

SALT = 0x9E1D0
TRIES = 8  # data seeds tried per template


def features(case: Case) -> set:
    """Every edge the case reaches, the data-dependent ones computed on the host from its routing and slots
    exactly as fuzz.data.tensors builds them (no kernel runs)."""
    from moe_lora_fuzz.fuzz.data.tensors import routing, slots

    found = set(case_features(case))
    if case.m:
        enabled = torch.ones(case.num_slots, dtype=torch.int32)
        for d in case.disabled:
            enabled[d] = 0
        found |= set(data_features(routing(case, "cpu"), slots(case, "cpu"), enabled, case.num_experts, case.num_slots))
    return found


def _templates(src: RandomSource, sizes: Sizes, interpreter: bool) -> list[Case]:
    dtype = src.choice(DTYPES)
    if interpreter and interpreter_limit(dtype, 2, bf16_atomics_ok()) is not None:
        dtype = DTYPES[0]  # bf16 expand split-K cannot run unpatched on the interpreter
    common = dict(dtype=dtype, layout=src.choice(LAYOUTS))
    small = min(sizes.blocks)
    bm = min(sizes.block_ms)
    rank = min(small - 4, sizes.rank)  # a tail of BLOCK_N and of BLOCK_K * split_k
    cfg = Case().config
    tile = dataclasses.replace(cfg.shrink, block_n=small, block_k=small, split_k=min(2, sizes.split_k))
    rich_cfg = dataclasses.replace(
        cfg,
        block_m=bm,
        shrink=dataclasses.replace(tile, num_warps=sizes.warps[0], num_stages=sizes.stages[0]),
        expand=dataclasses.replace(tile, n_tiles=2, num_warps=sizes.warps[0], num_stages=sizes.stages[0]),
    )
    top_k = min(4, sizes.top_k)
    rich = Case(
        **common,
        mul_routed_weight=True,  # every path on: the routed weight too
        m=min(bm // 2 + 1, sizes.m),
        top_k=top_k,
        num_experts=max(1, min(top_k - 1, sizes.experts)),
        num_slots=min(2, sizes.slots),
        rank=rank,
        real_rank=rank - 1,
        k_dim=min(small * 2 + small // 2, sizes.k_dim),
        n_dim=min(small + small // 2, sizes.n_dim),
        num_slices=2,
        offset=min(3, sizes.offset),
        extra_cols=2,
        routing="uniform",
        slotting="all_with_base",
        disabled=(1,) if sizes.slots > 1 else (),
        strided=True,
        align_slack=1,
        config=rich_cfg,
    )
    single = Case(
        **common,
        mul_routed_weight=src.flag(),
        m=1,
        top_k=1,
        num_experts=2,
        num_slots=2,
        rank=4,
        real_rank=4,
        k_dim=8,
        n_dim=8,
    )
    empty = Case(**common, m=0, top_k=2, num_experts=2, num_slots=2, rank=4, real_rank=4, k_dim=8, n_dim=8)
    return [rich, single, empty]


def prelude(sizes: Sizes, seed: int, interpreter: bool, fit=None) -> tuple:
    """The prelude's cases for a campaign seed (fit: the implementation's ImplProfile.fit, or None)."""
    src = RandomSource(seed ^ SALT)
    out = []
    templates = _templates(src, sizes, interpreter)
    for template in templates:
        best, best_n = None, -1
        for _ in range(TRIES):
            case = template.replace(seed=src.integer(0, 2**63 - 1))
            try:
                case = (fit(case) if fit else case).validate(interpreter)
            except ValueError:
                continue
            got = len(features(case) & set(REQUIRED_EDGES))
            if got > best_n:
                best, best_n = case, got
            if got == len(template_edges(template)):
                break
        if best is not None:
            out.append(best)
    return tuple(out)


def unreachable(cfg, impl) -> list:
    """Required edges the implementation cannot reach: the prelude's cases reach them before
    ImplProfile.fit and not after (fit holds a knob the implementation does not take at its neutral value)."""
    if impl is None:
        return []
    raw = set()
    for case in prelude_for(cfg, impl):
        found = features(case)
        try:
            unfitted = _templates_for(cfg, case).validate(cfg.device == "cpu")
        except ValueError:
            continue
        raw |= features(unfitted) - found
    reached = set(edges_reached(prelude_for(cfg, impl)))
    return [e for e in REQUIRED_EDGES if e in raw and e not in reached]


def _templates_for(cfg, case: Case) -> Case:
    """The unfitted template that `case` of the prelude came from, with the case's data seed."""
    src = RandomSource(cfg.seed ^ SALT)
    for template in _templates(src, cfg.sizes, cfg.device == "cpu"):
        if (template.m, template.top_k) == (case.m, case.top_k):
            return template.replace(seed=case.seed)
    return case


def template_edges(template: Case) -> set:
    """The required edges a template aims at: its knob-only edges and the data edges its slotting/routing make
    possible (the data seed decides whether they show)."""
    aims = set(case_features(template)) & set(REQUIRED_EDGES)
    if template.m == 0:
        return aims | {"empty_batch"}
    if template.m == 1:
        return aims | {"expert_without_tokens", "all_tokens_one_expert", "slot_without_tokens"}
    return aims | {"base_with_every_slot", "disabled_adapter_used", "duplicate_expert_in_token"}


def edges_reached(cases) -> list:
    """The required edges the given cases reach (host-side), in REQUIRED_EDGES order."""
    found = set()
    for c in cases:
        found |= features(c)
    return [e for e in REQUIRED_EDGES if e in found]


_CACHE: dict = {}


def prelude_for(cfg, impl=None) -> tuple:
    """The prelude of a campaign (fuzz.campaign.runner.CampaignConfig) for an implementation's profile (or None)."""
    interpreter = cfg.device == "cpu"
    key = (cfg.sizes, cfg.seed, interpreter, repr(impl))
    if key not in _CACHE:
        _CACHE[key] = prelude(cfg.sizes, cfg.seed, interpreter, impl.fit if impl is not None else None)
    return _CACHE[key]
