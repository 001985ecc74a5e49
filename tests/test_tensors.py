"""Case data: the counter-based generator (fuzz/data/counter_rng.py) and materialisation (fuzz/data/tensors.py).

Determinism, the hash against an exact Python model, coordinate stability under shrinking, SPEC §6's data
rules (signs, no zeros, scales, routed weights), the routing and slotting patterns, distribution sanity,
guard bands, and (GPU) bitwise equality of CPU- and GPU-built cases.
"""

import math

import pytest
import torch
from moe_lora_fuzz.fuzz.data import counter_rng as rng
from moe_lora_fuzz.fuzz.data.tensors import INT_SENTINEL, OUT_SENTINEL, materialize, routing, slots
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, GPU_SIZES, RandomSource, generate

M64 = (1 << 64) - 1
# every size above 1, two slices, strided views, the default config: each knob can shrink by one
BIG = Case(
    seed=5,
    dtype="float32",
    m=13,
    top_k=3,
    num_experts=6,
    num_slots=3,
    rank=9,
    real_rank=7,
    k_dim=40,
    n_dim=11,
    num_slices=2,
    layout="per_routed",
    offset=2,
    extra_cols=3,
    routing="uniform",
    slotting="random",
    strided=True,
).validate()


def _py_hash(key: int, coords: tuple) -> int:
    """The generator's hash in exact Python integers: splitmix64's finaliser of key + sum_d i_d * P_d."""
    z = (key + sum(i * p for i, p in zip(coords, rng._AXIS, strict=False))) & M64
    z = ((z ^ (z >> 30)) * rng._M1) & M64
    z = ((z ^ (z >> 27)) * rng._M2) & M64
    return z ^ (z >> 31)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]) if t.is_floating_point() else t


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool((_bits(a.contiguous()) == _bits(b.contiguous())).all())


def test_hash_matches_an_exact_uint64_model():
    """int64 torch ops (wrapping products, arithmetic shifts masked into logical ones) give the same bits as
    unsigned 64-bit arithmetic, for keys and coordinates that set the sign bit along the way."""
    for seed, name in ((0, "x"), (2**62 + 3, "lora_a[1]"), (7, "topk_ids")):
        key = rng.stream_key(seed, name)
        h = rng.hashes(key, [3, 5, 7, 300], "cpu")
        for coords in ((0, 0, 0, 0), (2, 4, 6, 299), (1, 3, 0, 150), (2, 0, 5, 7)):
            want = _py_hash(key & M64, coords)
            assert int(h[coords]) & M64 == want
    # a part of an axis given as indices hashes like the same coordinates of the full grid
    idx = torch.tensor([4, 1, 6])
    assert torch.equal(rng.hashes(9, [idx, 5], "cpu"), rng.hashes(9, [7, 5], "cpu")[idx])


def test_grids_hashed_together_match_one_at_a_time():
    """One pass over several grids (a repeated shape costs one add of the key difference, index tensors, an
    empty grid, a cached leading-axes grid) gives each grid the bits of hashing it alone."""
    idx = torch.tensor([4, 1, 6])
    grids = [(3, [2, 5, 7]), (2**63 - 5, [2, 5, 7]), (-(2**62), [idx, 5]), (11, [0, 4]), (12, [9]), (13, [70, 3])]
    together = rng.hash_grids(grids, "cpu")
    for (key, coords), h in zip(grids, together, strict=True):
        assert torch.equal(h, rng.hashes(key, coords, "cpu")), (key, coords)
        if all(isinstance(c, int) for c in coords) and len(coords) > 1:  # the generic sum, axis by axis
            want = key + sum(rng._axis_terms(n, a, len(coords), "cpu") for a, n in enumerate(coords))
            assert torch.equal(h, rng.mix(want.expand(coords).contiguous())), (key, coords)


def test_a_fresh_arena_holds_what_materialize_builds():
    """Tensors.fresh (the permutation twin's arena): a new arena with the starting bytes, every buffer viewed
    in it as materialize would build it again."""
    t = materialize(BIG, "cpu")
    before = t.snapshot()
    t.out.fill_(1.0)  # what a call does to the live arena must not matter
    again, fresh = materialize(BIG, "cpu"), t.fresh(before)
    assert fresh.arena.data_ptr() != t.arena.data_ptr() and fresh.arena.data_ptr() != before.data_ptr()
    for ga, gf in zip(again.guarded, fresh.guarded, strict=True):
        assert ga.name == gf.name and _same(ga.base, gf.base) and _same(ga.view, gf.view), ga.name
        assert gf.view.untyped_storage().data_ptr() == fresh.arena.untyped_storage().data_ptr(), gf.name
    assert _same(fresh.x, again.x) and _same(fresh.out, again.out)


def test_values_do_not_depend_on_how_the_work_is_split(monkeypatch):
    """Hashing in parts (large tensors), in shared batches (small ones) or per tensor gives the same bits."""
    whole = materialize(BIG.replace(m=40), "cpu")
    for chunk in (1000, 77):
        monkeypatch.setattr(rng, "CPU_CHUNK", chunk)
        split = materialize(BIG.replace(m=40), "cpu")
        for ga, gb in zip(whole.guarded, split.guarded, strict=True):
            assert _same(ga.base, gb.base), (chunk, ga.name)


def test_same_case_same_bytes_other_seed_other_data():
    a, b = materialize(BIG, "cpu"), materialize(BIG, "cpu")
    for ga, gb in zip(a.guarded, b.guarded, strict=True):
        assert ga.name == gb.name and _same(ga.base, gb.base), ga.name
    c = materialize(BIG.replace(seed=6), "cpu")
    assert not torch.equal(a.x, c.x) and not torch.equal(a.lora_a[0], c.lora_a[0])
    assert not torch.equal(a.lora_a[0], a.lora_a[1])  # every tensor its own stream


def _shrunk(case: Case, **changes) -> tuple:
    return materialize(case, "cpu"), materialize(case.replace(**changes).validate(), "cpu")


def test_shrinking_m_or_top_k_keeps_every_remaining_value():
    big, small = _shrunk(BIG, m=BIG.m - 1)
    m, k = BIG.m - 1, BIG.top_k
    assert _same(big.x[: m * k], small.x) and _same(big.out[:m], small.out)
    for name in ("topk_ids", "topk_weights", "token_lora"):
        assert _same(getattr(big, name)[:m], getattr(small, name)), name
    assert all(_same(a, b) for a, b in zip(big.lora_a + big.lora_b, small.lora_a + small.lora_b, strict=True))
    big, small = _shrunk(BIG, top_k=BIG.top_k - 1)
    k = BIG.top_k - 1
    assert _same(big.x.view(BIG.m, BIG.top_k, -1)[:, :k], small.x.view(BIG.m, k, -1))
    for name in ("topk_ids", "topk_weights"):
        assert _same(getattr(big, name)[:, :k], getattr(small, name)), name
    assert _same(big.out[:, :k], small.out) and _same(big.token_lora, small.token_lora)


def test_shrinking_k_n_r_keeps_every_remaining_value():
    big, small = _shrunk(BIG, k_dim=BIG.k_dim - 1)  # 40 -> 39: A's power-of-two scale stays 2^-3
    assert _same(big.x[:, :-1], small.x)
    assert all(_same(a[..., :-1], b) for a, b in zip(big.lora_a, small.lora_a, strict=True))
    assert all(_same(a, b) for a, b in zip(big.lora_b, small.lora_b, strict=True))
    big, small = _shrunk(BIG, n_dim=BIG.n_dim - 1)
    assert all(_same(a[:, :, :-1], b) for a, b in zip(big.lora_b, small.lora_b, strict=True))
    assert _same(big.out[..., : small.out.shape[-1]], small.out)  # columns keep their absolute index
    big, small = _shrunk(BIG, rank=BIG.rank - 1)  # real rank unchanged
    assert all(_same(a[:, :, :-1], b) for a, b in zip(big.lora_a, small.lora_a, strict=True))
    assert all(_same(a[..., :-1], b) for a, b in zip(big.lora_b, small.lora_b, strict=True))
    assert _same(big.x, small.x)


def test_a_scale_crossing_a_power_of_four_doubles_values_exactly():
    """K 33 -> 32 moves A's scale from 2^-3 to 2^-2: every remaining A value is exactly twice its old value."""
    for dtype in ("float32", "bfloat16"):
        big, small = _shrunk(BIG.replace(k_dim=33, dtype=dtype), k_dim=32)
        assert torch.equal(big.lora_a[0][..., :32].double() * 2, small.lora_a[0].double())


def test_shrinking_e_or_l_moves_only_the_documented_values():
    for pattern in ("uniform", "sparse", "distinct", "one_hot"):
        case = BIG.replace(routing=pattern, num_experts=8)
        big, small = _shrunk(case, num_experts=7)
        assert all(_same(a[:, :7], b) for a, b in zip(big.lora_a, small.lora_a, strict=True))
        ids_b, ids_s = big.topk_ids, small.topk_ids
        if pattern in ("uniform", "one_hot"):
            keep = ids_b != 7
            assert torch.equal(ids_b[keep], ids_s[keep]) and bool((ids_s < 7).all()), pattern
        if pattern == "distinct":  # tokens without expert 7 keep their row; others keep the prefix before it
            for row_b, row_s in zip(ids_b.tolist(), ids_s.tolist(), strict=True):
                cut = row_b.index(7) if 7 in row_b else len(row_b)
                assert row_b[:cut] == row_s[:cut]
        assert _same(big.x, small.x) and _same(big.topk_weights, small.topk_weights)
    big, small = _shrunk(BIG.replace(slotting="random"), num_slots=2)
    keep = big.token_lora != 2
    assert torch.equal(big.token_lora[keep], small.token_lora[keep]) and bool((small.token_lora < 2).all())
    assert all(_same(a[:2], b) for a, b in zip(big.lora_a, small.lora_a, strict=True))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_inputs_follow_the_data_rules(dtype):
    """SPEC §6: signed, never zero (float16 at K = 4096 has the smallest scale), scaled as the bound assumes;
    routed weights inside [0.1, 0.9] (float32) and never 0 or 1; padded rank rows and columns zero."""
    case = BIG.replace(dtype=dtype, k_dim=4096, m=20, rank=5, real_rank=3)
    t = materialize(case, "cpu")
    for name, v, scale in (
        ("x", t.x, 1.0),
        ("A", t.lora_a[0][:, :, :3], 2.0**-6),
        ("B", t.lora_b[1][..., :3], 2.0**-1),
        ("out0", t.out, 0.5),
    ):
        v = v.double()
        assert bool((v != 0).all()) and bool((v < 0).any()) and bool((v > 0).any()), name
        assert bool((v.abs() <= 3 * scale).all()), name  # Irwin-Hall of three uniforms: |v| < 3 sigma
        assert abs(v.std().item() / scale - 1) < 0.1, name
    assert bool((t.lora_a[0][:, :, 3:] == 0).all()) and bool((t.lora_b[0][..., 3:] == 0).all())
    w = t.topk_weights.double()
    assert bool(((w > 0) & (w < 1)).all())
    if dtype == "float32":
        assert bool(((w >= 0.1) & (w <= 0.9)).all())


def test_signed_values_look_normal_enough():
    """One big float32 draw: centred, unit std, symmetric, Irwin-Hall(3) kurtosis, no neighbour correlation."""
    v = torch.empty(64, 4096)
    rng.signed_into(v, rng.stream_key(1, "sanity"), 0)
    v = v.double()
    n = v.numel()
    assert abs(v.mean().item()) < 4 / math.sqrt(n)
    assert abs(v.std().item() - 1) < 0.01
    assert abs((v > 0).double().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(n)
    kurt = ((v - v.mean()) ** 4).mean().item() / v.var().item() ** 2 - 3
    assert abs(kurt - (-0.4)) < 0.05  # Irwin-Hall of 3 uniforms: excess kurtosis -6 / (5 * 3)
    for a, b in ((v[:, 1:], v[:, :-1]), (v[1:], v[:-1])):
        assert abs(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1].item()) < 0.02
    # a tail beyond 2 sigma exists (the distribution is bell-shaped, not uniform)
    assert 0.01 < (v.abs() > 2).double().mean().item() < 0.05


def test_routing_patterns():
    base = Case(seed=3, m=400, top_k=4, num_experts=8, num_slots=3).validate()
    uni = routing(base, "cpu")
    assert uni.dtype == torch.int32 and uni.shape == (400, 4) and bool(((uni >= 0) & (uni < 8)).all())
    freq = torch.bincount(uni.reshape(-1).long(), minlength=8).double() / uni.numel()
    assert bool(((freq - 1 / 8).abs() < 0.04).all())  # roughly uniform over experts
    srt = uni.sort(dim=1).values
    assert bool((srt[:, 1:] == srt[:, :-1]).any())  # duplicates within a token allowed (and happen)
    dis = routing(base.replace(routing="distinct"), "cpu")
    assert all(len(set(row)) == 4 for row in dis.tolist())
    one = routing(base.replace(routing="one_hot"), "cpu")
    assert len(set(one.reshape(-1).tolist())) == 1
    sparse = routing(base.replace(routing="sparse"), "cpu")
    assert len(set(sparse.reshape(-1).tolist())) == 2  # E // 4 hot experts
    assert routing(base.replace(m=0), "cpu").shape == (0, 4)


def test_slotting_patterns():
    base = Case(seed=4, m=50, num_slots=5, slotting="random").validate()
    lanes = slots(base, "cpu")
    assert set(lanes.tolist()) == set(range(-1, 5))
    assert set(slots(base.replace(slotting="no_base"), "cpu").tolist()) == set(range(5))
    assert set(slots(base.replace(slotting="all_base"), "cpu").tolist()) == {-1}
    assert len(set(slots(base.replace(slotting="one_slot"), "cpu").tolist())) == 1
    for m in (6, 7, 50):  # -1 and every slot present as soon as there are L + 1 tokens
        assert set(slots(base.replace(slotting="all_with_base", m=m), "cpu").tolist()) == set(range(-1, 5))
    assert sorted(slots(base.replace(slotting="all_with_base", m=3), "cpu").tolist()) == [-1, 0, 1]


def test_guards_and_strided_views():
    """Input margins NaN, written buffers' margins sentinel, the workspace poisoned, strided views padded and
    one element past an aligned address, every base 256-byte aligned in the arena."""
    t = materialize(BIG, "cpu")
    for g in t.guarded:
        assert g.offset % 256 == 0
        margin = g.base[g.guard_mask()]
        if g.is_input and g.base.is_floating_point():
            assert bool(margin.isnan().all()), g.name
        elif g.is_input:
            assert bool((margin == INT_SENTINEL).all()), g.name
        elif g.base.is_floating_point():
            assert bool((margin == OUT_SENTINEL).all()), g.name
        if g.view.dim() >= 2:
            assert g.view.stride()[-2] == g.view.shape[-1] + 3, g.name
            assert (g.view.storage_offset() - g.base.storage_offset()) % 64 == 1, g.name
    assert bool(t.intermediate.isnan().all())
    assert bool((t.align.sorted_token_ids == INT_SENTINEL).all())


def test_host_copies_are_the_inputs_and_not_aliases():
    t = materialize(BIG, "cpu")
    h = t.host_op()
    assert _same(h.x, t.x) and _same(h.topk_ids, t.topk_ids) and _same(h.lora_a[1], t.lora_a[1])
    assert _same(h.lora_b[0], t.lora_b[0]) and h.x.data_ptr() != t.x.data_ptr()
    t.x.fill_(0)  # an implementation writing its inputs does not change what the references read
    assert not bool((t.host["x"] == 0).all())


def test_materialize_refuses_an_unknown_place():
    with pytest.raises(ValueError, match="where"):
        materialize(BIG, "cpu", where="gpu")


@pytest.mark.gpu
def test_cpu_and_gpu_build_bitwise_identical_tensors():
    """100 campaign cases (nightly sizes and tiny ones): built on the GPU (forced, and the automatic
    choice) every guarded buffer, margins included, has the same bits as the CPU build."""
    sizes = [GPU_SIZES] * 60 + [CPU_SIZES] * 40
    for i, s in enumerate(sizes):
        case = generate(RandomSource(1000 + i), s, interpreter=False, seed=1000 + i)
        cpu = materialize(case, "cpu")
        for where in ("device", "auto"):
            gpu = materialize(case, "cuda", where=where)
            for gc, gg in zip(cpu.guarded, gpu.guarded, strict=True):
                assert gg.view.is_cuda
                assert _same(gc.base, gg.base.cpu()), (i, where, gc.name, case)
                assert _same(gc.view, gg.view.cpu()), (i, where, gc.name, case)
            h = gpu.host_op()
            assert _same(h.x, cpu.x) and _same(h.topk_ids, cpu.topk_ids)
            # the oracle judges where the snapshot lives (the host for a case built there), the mask beside it
            assert gpu.writable.device == gpu.snapshot().device
