"""The two references agree with each other and follow SPEC §2 on the edge cases."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from moe_lora_fuzz.contract import OpArgs
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.reference import fp64, moe_lora_fp64, moe_lora_naive

from tests.cases import BASE, EDGES


@pytest.mark.parametrize("case", EDGES)
def test_references_agree(case: Case):
    t = materialize(case, "cpu")
    ref = moe_lora_fp64(t.op())
    naive = moe_lora_naive(t.op())
    np.testing.assert_allclose(ref.delta.numpy(), naive, rtol=1e-12, atol=1e-12)


def test_fp64_chunks_agree_with_one_pass(monkeypatch):
    """Pairs processed in several chunks (as on large cases) give the same result as in one."""
    case = BASE.replace(m=9, top_k=2, num_slots=2, slotting="all_with_base", mul_routed_weight=True)
    t = materialize(case, "cpu")
    whole = moe_lora_fp64(t.op())
    monkeypatch.setattr(fp64, "CHUNK_ELEMENTS", case.rank * (case.k_dim + case.n_dim) * 4)  # 4 pairs a chunk
    chunked = moe_lora_fp64(t.op())
    for name in ("delta", "mag_full", "mag_mid"):
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name


def test_base_and_disabled_pairs_get_exact_zero():
    case = BASE.replace(m=12, num_slots=3, slotting="all_with_base", disabled=(1,))
    t = materialize(case, "cpu")
    ref = moe_lora_fp64(replace(t.op(), mul_routed_weight=True))
    lanes = t.token_lora.long()
    inactive = (lanes < 0) | (lanes == 1)
    assert inactive.any() and (~inactive).any()
    assert torch.equal(ref.active, ~inactive[:, None].expand(-1, case.top_k))
    assert bool((ref.delta[inactive] == 0).all())
    assert bool((ref.delta[~inactive].abs() > 0).any())


def test_routed_weight_applied_exactly_once():
    t = materialize(BASE.replace(slotting="no_base"), "cpu")
    plain = moe_lora_fp64(replace(t.op(), mul_routed_weight=False)).delta
    weighted = moe_lora_fp64(replace(t.op(), mul_routed_weight=True)).delta
    w = t.topk_weights.double()[:, :, None, None]
    torch.testing.assert_close(weighted, plain * w, rtol=1e-12, atol=0)


def test_layouts_agree_when_routed_rows_repeat_token_rows():
    """Per-routed x whose rows repeat the token's row must give the per-token result."""
    t = materialize(BASE.replace(slotting="no_base"), "cpu")
    per_token = replace(t.op(), mul_routed_weight=True)
    per_routed = replace(per_token, x=t.x.repeat_interleave(BASE.top_k, dim=0), layout="per_routed")
    a = moe_lora_fp64(per_token).delta
    b = moe_lora_fp64(per_routed).delta
    assert torch.equal(a, b)
    np.testing.assert_allclose(moe_lora_naive(per_routed), b.numpy(), rtol=1e-12, atol=1e-15)


def test_fp64_matches_hand_computation():
    """One token, one expert, one slot: delta = w * B (A x), written out by hand."""
    x = torch.tensor([[1.0, 2.0]])
    a = torch.tensor([[[[1.0, -1.0]]]])  # (L=1, E=1, R=1, K=2): t = 1 - 2 = -1
    b = torch.tensor([[[[3.0], [0.5]]]])  # (L, E, N=2, R=1): d = (-3, -0.5)
    ref = moe_lora_fp64(
        OpArgs(
            out=torch.zeros(1, 1, 2),
            x=x,
            topk_ids=torch.zeros(1, 1, dtype=torch.int32),
            topk_weights=torch.tensor([[0.25]]),
            token_lora=torch.zeros(1, dtype=torch.int32),
            adapter_enabled=torch.ones(1, dtype=torch.int32),
            lora_a=[a],
            lora_b=[b],
            mul_routed_weight=True,
            offset=0,
            layout="per_token",
        )
    )
    assert ref.delta.flatten().tolist() == [-0.75, -0.125]
