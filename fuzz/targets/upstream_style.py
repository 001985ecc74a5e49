"""A check that mimics the upstream tests, to show side by side what they catch.

Upstream (vLLM/SGLang) tests use one token count (100), block size 16, SPLIT_K = 1, all-positive
torch.rand inputs, contiguous fresh tensors and a fixed 1e-2 tolerance. This module reproduces exactly
that discipline on our own inputs; it is a baseline for the benchmark, never a harness check.
"""

from __future__ import annotations

import torch
from moe_lora_fuzz.contract import rows_for
from moe_lora_fuzz.fuzz.data.tensors import TORCH_DTYPES, Tensors
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impls import Impl
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig, alloc_align
from moe_lora_fuzz.reference import moe_lora_fp64

UPSTREAM_CONFIG = MoeLoraConfig(
    block_m=16,
    shrink=TileConfig(block_n=16, block_k=16, split_k=1),
    expand=TileConfig(block_n=16, block_k=16, split_k=1),
)
# gate_up (per-token x, S = 2) and down (per-routed x, routed weight), as the upstream test pair does
UPSTREAM_CASES = (
    Case(
        dtype="float16",
        m=100,
        top_k=2,
        num_experts=8,
        num_slots=4,
        rank=16,
        real_rank=16,
        k_dim=64,
        n_dim=32,
        num_slices=2,
        layout="per_token",
        mul_routed_weight=False,
        slotting="no_base",
        config=UPSTREAM_CONFIG,
    ),
    Case(
        dtype="float16",
        m=100,
        top_k=2,
        num_experts=8,
        num_slots=4,
        rank=16,
        real_rank=16,
        k_dim=32,
        n_dim=64,
        num_slices=1,
        layout="per_routed",
        mul_routed_weight=True,
        slotting="no_base",
        config=UPSTREAM_CONFIG,
    ),
)


def upstream_check(case: Case, impl: Impl, device) -> tuple[bool, str]:
    """(passed, message) for one upstream-style case; `case` gives shapes and seed, data is torch.rand."""
    g = torch.Generator().manual_seed(case.seed)
    dt = TORCH_DTYPES[case.dtype]
    m, k, L, E, R = case.m, case.top_k, case.num_slots, case.num_experts, case.rank
    rows = rows_for(case.layout, m, k)

    def rand(*shape):
        return torch.rand(shape, generator=g).to(dt).to(device)

    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(m)]).to(torch.int32).to(device)
    t = Tensors(
        case=case,
        x=rand(rows, case.k_dim),
        topk_ids=ids,
        topk_weights=rand(m, k),
        token_lora=torch.randint(0, L, (m,), generator=g, dtype=torch.int32).to(device),
        adapter_enabled=torch.ones(L, dtype=torch.int32, device=device),
        lora_a=[rand(L, E, R, case.k_dim) for _ in range(case.num_slices)],
        lora_b=[rand(L, E, case.n_dim, R) for _ in range(case.num_slices)],
        out=torch.zeros(m, k, case.num_slices * case.n_dim, dtype=dt, device=device),
        intermediate=torch.zeros(case.num_slices, m * k, R, device=device),
        align=alloc_align(L, m * k, E, case.config.block_m, device),
    )
    try:
        impl(t)
    except Exception as e:
        return False, f"raised {type(e).__name__}: {e}"
    ref = moe_lora_fp64(t.op()).delta.reshape(t.out.shape)
    try:
        torch.testing.assert_close(t.out.double(), ref, atol=1e-2, rtol=1e-2)
    except AssertionError as e:
        return False, str(e).splitlines()[0]
    return True, ""
