"""Invariants of moe_lora_align_block_size."""

import pytest
import torch
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.kernels import alloc_align, moe_lora_align_block_size, padded_length
from moe_lora_fuzz.kernels.align import align_torch, align_triton

from tests.cases import EDGES


def _align(impl, topk_ids, token_lora, num_experts, num_slots, block_m):
    buf = alloc_align(num_slots, topk_ids.numel(), num_experts, block_m, topk_ids.device)
    impl(topk_ids, token_lora, num_experts, block_m, buf)
    return buf


@pytest.mark.parametrize("case", EDGES)
@pytest.mark.parametrize("block_m", [16, 32])
@pytest.mark.parametrize("impl", [align_torch, align_triton], ids=["torch", "triton"])
def test_align_invariants(case, block_m, impl, device):
    t = materialize(case, device)
    m, k, E, L = case.m, case.top_k, case.num_experts, case.num_slots
    buf = _align(impl, t.topk_ids, t.token_lora, E, L, block_m)
    p = padded_length(m * k, E, block_m)
    assert buf.sorted_token_ids.shape == (L, p) and p % block_m == 0
    assert buf.expert_ids.shape == (L, p // block_m)
    lanes = t.token_lora.long().repeat_interleave(k)
    experts = t.topk_ids.reshape(-1).long()
    for slot in range(L):
        ntp = int(buf.num_tokens_post_padded[slot])
        row = buf.sorted_token_ids[slot]
        want = sorted(torch.nonzero(lanes == slot).flatten().tolist())
        assert ntp % block_m == 0 and ntp <= p
        assert (ntp == 0) == (len(want) == 0)  # an empty slot uses no blocks
        got = row[:ntp]
        real = got[got < m * k].tolist()
        assert sorted(real) == want  # every routed pair of this slot exactly once
        assert bool((row[ntp:] == m * k).all())  # padding is the sentinel
        blocks = buf.expert_ids[slot]
        assert bool((blocks[ntp // block_m :] == -1).all())
        for b in range(ntp // block_m):
            ids = got[b * block_m : (b + 1) * block_m]
            ids = ids[ids < m * k].long()
            assert len(ids) > 0  # no block is padding only
            assert bool((experts[ids] == int(blocks[b])).all())  # one expert per block
        counts = torch.bincount(experts[lanes == slot], minlength=E)
        assert ntp == int(((counts + block_m - 1) // block_m * block_m).sum())


def test_align_into_oversized_buffers_keeps_the_slack():
    case = EDGES[0].values[0].replace(align_slack=2)
    t = materialize(case, "cpu")
    buf = moe_lora_align_block_size(t.topk_ids, t.token_lora, case.num_experts, case.num_slots, 16, t.align)
    p = padded_length(case.m * case.top_k, case.num_experts, 16)
    assert buf is t.align
    assert bool((buf.sorted_token_ids[:, p:] != case.m * case.top_k).all())  # beyond P: untouched poison


@pytest.mark.parametrize("seed", range(6))
def test_triton_align_equals_torch_align_bitwise(seed, device):
    """The GPU path (Triton) and the CPU path (torch) must give the same buffers, including the order of
    pairs inside a group, ids of experts not on this rank (-1, >= E) and slots out of range."""
    g = torch.Generator().manual_seed(seed)
    m = [0, 1, 129, 300, 45, 260][seed]
    k, E, L = 1 + seed % 4, [1, 3, 8, 33, 64, 5][seed], 1 + seed % 3
    ids = torch.randint(-1, E + 1, (m, k), generator=g, dtype=torch.int32 if seed % 2 else torch.int64)
    lanes = torch.randint(-1, L + 1, (m,), generator=g, dtype=torch.int32)
    ids, lanes = ids.to(device), lanes.to(device)
    for block_m in (16, 64):
        want = _align(align_torch, ids, lanes, E, L, block_m)
        got = _align(align_triton, ids, lanes, E, L, block_m)
        for name in ("sorted_token_ids", "expert_ids", "num_tokens_post_padded"):
            assert torch.equal(getattr(got, name), getattr(want, name)), (name, block_m)


def test_public_align_takes_either_implementation_and_refuses_others(device):
    ids = torch.tensor([[2, 0], [1, 2], [0, 0]], dtype=torch.int32, device=device)
    lanes = torch.tensor([1, 0, 1], dtype=torch.int32, device=device)
    bufs = [moe_lora_align_block_size(ids, lanes, 3, 2, 16, impl=impl) for impl in ("auto", "triton", "torch")]
    for b in bufs[1:]:
        assert torch.equal(b.sorted_token_ids, bufs[0].sorted_token_ids)
        assert torch.equal(b.expert_ids, bufs[0].expert_ids)
    with pytest.raises(ValueError, match=r"^impl='cuda': must be one of auto, triton, torch"):
        moe_lora_align_block_size(ids, lanes, 3, 2, 16, impl="cuda")
