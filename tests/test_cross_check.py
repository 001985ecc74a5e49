"""The two references and when they meet (issue 29): the vectorised fp64 reference against the naive loop on
many random cases, the naive cross-check's sampling rule on a GPU, and the rule that every finding gets it."""

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.fuzz.judgement import compare
from moe_lora_fuzz.fuzz.judgement.oracle import check, resolve
from moe_lora_fuzz.fuzz.judgement.verdict import NAIVE_EVERY
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.strategies import cases
from moe_lora_fuzz.reference import fp64, moe_lora_fp64, moe_lora_naive

from tests.cases import BASE

TORCH_IMPL = "tests/example_impl.py:torch_moe_lora"
BUGGY_IMPL = "tests/example_impl.py:torch_moe_lora_buggy"  # the routed weight applied twice


def _agree(case: Case, chunk: int | None = None, monkeypatch=None) -> None:
    t = materialize(case, "cpu")
    if chunk is not None:
        monkeypatch.setattr(fp64, "CHUNK_ELEMENTS", chunk)
    ref = moe_lora_fp64(t.op())
    naive = moe_lora_naive(t.op())
    assert ref.delta.shape == (case.m, case.top_k, case.num_slices, case.n_dim)
    np.testing.assert_allclose(ref.delta.numpy(), naive, rtol=1e-12, atol=1e-300)
    # exact zeros where the op adds nothing: base-model tokens and disabled slots
    assert bool((ref.delta[~ref.active] == 0).all()) and not np.any(naive[~ref.active.numpy()])


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_fp64_reference_agrees_with_the_naive_loop_on_random_cases(case: Case):
    """The shared knob space (every layout, mul_routed_weight, split-K, padding, strided views, empty slots,
    disabled adapters, base tokens, duplicate experts, real rank below R): same delta to 1e-12, exact zeros."""
    _agree(case)


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_fp64_reference_in_many_chunks_is_bitwise_the_one_pass_result(case: Case):
    """Chunking the routed pairs (CPU: 32 MiB; GPU: 512 MiB a chunk) never changes a bit."""
    t = materialize(case, "cpu")
    whole = moe_lora_fp64(t.op())
    saved = fp64.CHUNK_ELEMENTS
    try:
        fp64.CHUNK_ELEMENTS = case.rank * (case.k_dim + case.n_dim) * case.num_slices * 3  # 3 pairs a chunk
        parts = moe_lora_fp64(t.op())
    finally:
        fp64.CHUNK_ELEMENTS = saved
    for name in ("delta", "mag_full", "mag_mid", "active"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name


def test_references_agree_on_the_edges():
    """Named edges: an empty batch, every slot disabled, base tokens only, the routed weight on both layouts,
    split-K on both stages, strided (padded) views, real rank below R, extra and offset columns."""
    edges = [
        BASE.replace(m=0),
        BASE.replace(disabled=tuple(range(BASE.num_slots - 1))),
        BASE.replace(slotting="all_base"),
        BASE.replace(mul_routed_weight=True, layout="per_token"),
        BASE.replace(mul_routed_weight=True, layout="per_routed"),
        BASE.replace(strided=True, num_slices=2, real_rank=max(1, BASE.rank // 2)),
        BASE.replace(offset=8, extra_cols=3, routing="one_hot"),
    ]
    sk = BASE.config
    edges.append(
        BASE.replace(
            config=type(sk)(
                block_m=sk.block_m,
                shrink=type(sk.shrink)(block_n=16, block_k=16, split_k=2),
                expand=type(sk.expand)(block_n=16, block_k=16, split_k=2),
                align=sk.align,
            )
        )
    )
    for case in edges:
        _agree(case.validate(interpreter=True))


def test_naive_cross_check_runs_on_every_cpu_case_and_one_gpu_case_in_naive_every():
    seeds = [BASE.replace(seed=s) for s in range(4000)]
    assert all(compare.naive_due(c, "cpu") for c in seeds[:50])
    due = [compare.naive_due(c, "cuda") for c in seeds]
    assert due == [compare.naive_due(c, torch.device("cuda")) for c in seeds]  # a pure function of the seed
    share = sum(due) / len(due)
    assert 0.6 / NAIVE_EVERY < share < 1.4 / NAIVE_EVERY, share
    # not tied to the permutation twin's even seeds: sampled cases of both parities
    assert Counter(c.seed % 2 for c, d in zip(seeds, due, strict=True) if d).keys() == {0, 1}


def _count_naive(monkeypatch) -> Counter:
    calls = Counter()
    real = compare.moe_lora_naive

    def counted(args):
        calls["naive"] += 1
        return real(args)

    monkeypatch.setattr(compare, "moe_lora_naive", counted)
    return calls


def test_a_passing_unsampled_case_skips_the_naive_loop(monkeypatch):
    calls = _count_naive(monkeypatch)
    v = check(BASE, TORCH_IMPL, "cpu", cross_check=False, permutation=False)
    assert v.kind == "pass" and calls["naive"] == 0
    v = check(BASE, TORCH_IMPL, "cpu", permutation=False)  # the CPU rule: up front, once
    assert v.kind == "pass" and calls["naive"] == 1


def test_every_finding_is_cross_checked_before_it_is_returned(monkeypatch):
    """A failing verdict of an unsampled case runs the naive loop; the finding stands when the references agree."""
    calls = _count_naive(monkeypatch)
    case = BASE.replace(mul_routed_weight=True)
    v = check(case, BUGGY_IMPL, "cpu", cross_check=False, permutation=False, impl=resolve(BUGGY_IMPL))
    assert v.kind == "mismatch" and calls["naive"] == 1


def test_a_wrong_fp64_reference_is_caught_on_a_finding_even_unsampled(monkeypatch):
    """With the fp64 reference broken (a scale error), the correct implementation fails against it; the late
    cross-check then names the references' disagreement, as the up-front check would have."""
    real = compare.moe_lora_fp64

    def doubled(args):
        r = real(args)
        return fp64.Fp64Result(r.delta * 2, r.active, r.mag_full, r.mag_mid)

    monkeypatch.setattr(compare, "moe_lora_fp64", doubled)
    for cross in (False, True):
        v = check(BASE, TORCH_IMPL, "cpu", cross_check=cross, permutation=False)
        assert v.kind == "reference-disagreement", (cross, v.kind, v.message)


def _writes_its_input(**kw):
    """Correct delta, then it scribbles on x: an input written is an oob-write, never a reference disagreement."""
    from tests.example_impl import torch_moe_lora

    torch_moe_lora(**kw)
    kw["x"].mul_(2)


def test_the_late_cross_check_reads_the_inputs_as_they_were_before_the_call(monkeypatch):
    calls = _count_naive(monkeypatch)
    name = "tests/test_cross_check.py:_writes_its_input"
    v = check(BASE, name, "cpu", cross_check=False, permutation=False)
    assert v.kind == "oob-write" and calls["naive"] == 1, (v.kind, v.message)


# ---- the fp64 reference's block layout (pairs grouped by slot and expert, as the align groups them) ----------
@settings(max_examples=80, deadline=None)
@given(
    groups=st.integers(1, 40),
    tile=st.sampled_from([1, 2, 4, 8, 64]),
    keys=st.lists(st.integers(0, 39), min_size=1, max_size=120),
)
def test_block_layout_puts_each_group_in_whole_blocks_of_its_own(groups, tile, keys):
    key = torch.tensor([k % groups for k in keys], dtype=torch.int64)
    pos, pair_at, block_key, blocks = fp64._layout(key, groups, tile)
    pairs = key.numel()
    assert pair_at.numel() == blocks * tile and len(set(pos.tolist())) == pairs  # one position per pair
    assert torch.equal(pair_at[pos], torch.arange(pairs))  # and the pair at it is that pair
    assert torch.equal(block_key[pos // tile], key)  # a block holds pairs of its own group only
    assert int((pair_at < pairs).sum()) == pairs  # every other position is padding
    order = pos.argsort()  # pairs in position order: groups ascending, each group in pair order
    assert torch.equal(key[order], key.sort(stable=True).values)
    for g in set(key.tolist()):  # and each group's blocks start at a block boundary
        p = pos[key == g]
        assert bool((p[1:] > p[:-1]).all()) and int(p[0]) % tile == 0


@pytest.mark.parametrize("tile", [1, 2, 8, 64])
@pytest.mark.parametrize(
    "case",
    [
        BASE.replace(m=150, top_k=2, num_experts=3, num_slots=2),  # many pairs per group: real blocks
        BASE.replace(m=150, top_k=4, num_slots=3, layout="per_routed", mul_routed_weight=True, strided=True),
        BASE.replace(m=90, routing="one_hot", slotting="all_with_base", disabled=(0,)),
        BASE.replace(m=5, num_experts=8, num_slots=4),  # fewer pairs than groups
    ],
    ids=["dense-groups", "per-routed-mrw-strided", "one-expert-disabled-slot", "sparse-groups"],
)
def test_fp64_reference_agrees_with_the_naive_loop_at_every_tile(case, tile, monkeypatch):
    """Whatever the tile (1 is one block per pair, 64 pads most groups), the delta is the naive loop's, and
    chunking the blocks never changes a bit."""
    monkeypatch.setattr(fp64, "_tile", lambda pairs, groups: tile)
    case = case.validate(interpreter=True)
    _agree(case)
    t = materialize(case, "cpu")
    whole = moe_lora_fp64(t.op())
    monkeypatch.setattr(fp64, "CHUNK_ELEMENTS", 1)  # one block a chunk
    for name in ("delta", "mag_full", "mag_mid"):
        assert torch.equal(getattr(moe_lora_fp64(t.op()), name), getattr(whole, name)), name


def test_tile_follows_the_mean_group_and_stays_bounded():
    assert fp64._tile(10, 64) == 1 and fp64._tile(64, 8) == 8 and fp64._tile(4800, 8) == fp64.MAX_TILE
    assert fp64._tile(1, 1) == 1 and fp64._tile(0, 5) == 1


@pytest.mark.parametrize("tile", [1, 8])
def test_fp64_reference_on_the_device_agrees_with_the_naive_loop(tile, device, monkeypatch):
    """The block layout's sort, scatter and gathers where the campaign runs them (on a GPU: CUDA's kernels, one
    chunk of CUDA_CHUNK_ELEMENTS): the same delta as the naive loop on the host, exact zeros where nothing is added."""
    monkeypatch.setattr(fp64, "_tile", lambda pairs, groups: tile)
    for case in (
        BASE.replace(m=150, top_k=2, num_experts=3, num_slots=2, mul_routed_weight=True),
        BASE.replace(m=90, top_k=4, layout="per_routed", slotting="all_with_base", disabled=(1,), strided=True),
        BASE.replace(m=0),
    ):
        t = materialize(case.validate(interpreter=device == "cpu"), device, where="device")
        ref = moe_lora_fp64(t.op())
        assert ref.delta.device.type == torch.device(device).type
        naive = moe_lora_naive(t.host_op())
        np.testing.assert_allclose(ref.delta.cpu().numpy(), naive, rtol=1e-12, atol=1e-300)
        assert bool((ref.delta[~ref.active] == 0).all())
