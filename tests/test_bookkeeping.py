"""The harness's bookkeeping, each part checked against an answer known independently of the code under test:
the adapter signature check (fuzz/targets/impls.py), coverage edges (fuzz/space/coverage.py) and the minimiser's
1-minimality (fuzz/triage/minimize.py, against a planted predicate whose minimal case is known by hand)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES, Coverage, case_features, data_features
from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve
from moe_lora_fuzz.fuzz.triage.minimize import describe, minimize
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig

# ---- adapter signature ------------------------------------------------------------------------------------
ADAPTER = (
    "out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout"
)
SIGNATURES = {
    "exact": (f"*, {ADAPTER}", True),
    "positional_or_keyword": (ADAPTER, True),
    "var_keyword": ("**kwargs", True),
    "some_then_var_keyword": ("out, x, **rest", True),
    "extra_optional": (f"*, {ADAPTER}, scale=1.0", True),
    "extra_required": (f"*, {ADAPTER}, scale", False),
    "extra_required_positional": (f"block_size, *, {ADAPTER}", False),
    "missing_layout": (f"*, {ADAPTER.replace(', layout', '')}", False),
    "missing_out": (f"*, {ADAPTER.replace('out, ', '', 1)}", False),
    "positional_only": (f"{ADAPTER}, /", False),
    "no_arguments": ("", False),
}


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapters") / "impls_under_test.py"
    path.write_text("".join(f"def {name}({sig}):\n    pass\n\n\n" for name, (sig, _) in SIGNATURES.items()))
    return path


@pytest.mark.parametrize("name", SIGNATURES)
def test_adapter_signature_check(adapter_file, name):
    """Accepted iff a call with exactly the adapter keywords binds: an extra required argument, a missing
    keyword or positional-only parameters are refused before any case runs; **kwargs is fine."""
    accepted = SIGNATURES[name][1]
    spec = f"{adapter_file}:{name}"
    if accepted:
        assert callable(resolve(spec))
    else:
        with pytest.raises(ImplError, match=r"signature does not accept the adapter keywords"):
            resolve(spec)


def test_adapter_module_without_the_function_is_refused(adapter_file):
    with pytest.raises(ImplError, match=r"has no callable 'nope'"):
        resolve(f"{adapter_file}:nope")


def test_adapter_receives_exactly_the_adapter_keywords(tmp_path):
    """What an accepted **kwargs adapter is called with: the SPEC §2 names, nothing else."""
    path = tmp_path / "spy.py"
    path.write_text(
        textwrap.dedent("""
        SEEN = []
        def spy(**kwargs):
            SEEN.append(sorted(kwargs))
    """)
    )
    from moe_lora_fuzz.fuzz.data.tensors import materialize

    from tests.cases import BASE

    impl = resolve(f"{path}:spy")
    impl(materialize(BASE, "cpu"))
    import sys

    mod = next(m for n, m in sys.modules.items() if n.endswith("_spy") and hasattr(m, "SEEN"))
    assert mod.SEEN == [sorted(ADAPTER.split(", "))]


# ---- coverage ---------------------------------------------------------------------------------------------
PLAIN = Case(m=16, k_dim=32, n_dim=32, rank=32, real_rank=32)  # every size a multiple of the default blocks
_DEFAULT = MoeLoraConfig()


def _tiles(shrink=None, expand=None) -> MoeLoraConfig:
    return MoeLoraConfig(shrink=shrink or TileConfig(), expand=expand or TileConfig())


# edge -> a one-change case from PLAIN that reaches it (alone unless listed in ALSO)
CASE_EDGES = {
    "m_not_block_multiple": PLAIN.replace(m=17),
    "k_tail": PLAIN.replace(k_dim=33),
    "n_tail": PLAIN.replace(n_dim=33),
    "r_tail": PLAIN.replace(rank=48, real_rank=48),
    "m_is_1": PLAIN.replace(m=1),
    "empty_batch": PLAIN.replace(m=0),
    "real_rank_below_R": PLAIN.replace(real_rank=31),
    "offset_and_extra_columns": PLAIN.replace(offset=1, extra_cols=1),
    "strided_views": PLAIN.replace(strided=True),
    "align_buffers_oversized": PLAIN.replace(align_slack=1),
    "two_slices": PLAIN.replace(num_slices=2),
    "shrink_split_k": PLAIN.replace(k_dim=64, config=_tiles(shrink=TileConfig(split_k=2))),
    "expand_split_k": PLAIN.replace(rank=64, real_rank=64, config=_tiles(expand=TileConfig(split_k=2))),
    "n_tiles_loop": PLAIN.replace(rank=64, real_rank=64, config=_tiles(shrink=TileConfig(n_tiles=2))),
}
ALSO = {"m_is_1": {"m_not_block_multiple"}}  # M = 1 is never a multiple of BLOCK_M >= 16
# edge -> (topk_ids, token_lora, adapter_enabled, num_experts, num_slots) reaching it alone
PLAIN_DATA = ([[0, 1], [1, 0]], [0, 0], [1], 2, 1)
DATA_EDGES = {
    "expert_without_tokens": ([[0, 1], [1, 0]], [0, 0], [1], 3, 1),
    "all_tokens_one_expert": ([[0], [0]], [0, 0], [1], 1, 1),
    "slot_without_tokens": ([[0, 1], [1, 0]], [0, 0], [1, 1], 2, 2),
    "base_with_every_slot": ([[0, 1], [1, 0]], [-1, 0], [1], 2, 1),
    "disabled_adapter_used": ([[0, 1], [1, 0]], [0, 0], [0], 2, 1),
    "duplicate_expert_in_token": ([[0, 0], [1, 0]], [0, 0], [1], 2, 1),
}


# near misses: one half of an edge's condition without the other reaches nothing (or only what is listed)
CASE_NEAR_MISSES = [
    PLAIN.replace(offset=1),
    PLAIN.replace(extra_cols=1),
    PLAIN.replace(real_rank=32),
    PLAIN.replace(config=_tiles(shrink=TileConfig(n_tiles=2), expand=TileConfig(n_tiles=2))),
]
DATA_NEAR_MISSES = [
    (([[0, 1], [1, 0]], [-1, 0], [1, 1], 2, 2), ["slot_without_tokens"]),  # base present, slot 1 missing
    (([[0, 1], [1, 0]], [0, 1], [1, 0], 2, 2), ["disabled_adapter_used"]),  # every slot, no base
    (([[0, 1], [1, 0]], [-1, -1], [0], 2, 1), ["slot_without_tokens"]),  # a disabled slot nobody uses
    (([[1, 0], [0, 1]], [0, 0], [1], 2, 1), []),  # same experts, other order: no duplicate within a token
    (([[1], [1]], [0, 0], [1], 2, 1), ["expert_without_tokens", "all_tokens_one_expert"]),  # one of two used
]


@pytest.mark.parametrize("case", CASE_NEAR_MISSES)
def test_case_near_misses_reach_no_edge(case):
    assert _required(case_features(case.validate())) == []


@pytest.mark.parametrize("data, edges", DATA_NEAR_MISSES)
def test_data_near_misses(data, edges):
    assert _data_features(*data) == edges


def _required(edges) -> list[str]:
    """The required edges among `edges` (the derived-size and no-op edges are reported apart, not required)."""
    return [e for e in edges if e in REQUIRED_EDGES]


def _data_features(ids, lanes, enabled, experts, slots) -> list[str]:
    i32 = torch.int32
    return _required(
        data_features(
            torch.tensor(ids, dtype=i32),
            torch.tensor(lanes, dtype=i32),
            torch.tensor(enabled, dtype=i32),
            experts,
            slots,
        )
    )


def test_edge_tables_name_every_required_edge():
    assert sorted(CASE_EDGES) + sorted(DATA_EDGES) == sorted(CASE_EDGES) + sorted(DATA_EDGES)
    assert set(CASE_EDGES) | set(DATA_EDGES) == set(REQUIRED_EDGES)
    assert not set(CASE_EDGES) & set(DATA_EDGES)


def test_plain_case_and_data_reach_no_edge():
    assert _required(case_features(PLAIN)) == []
    assert _data_features(*PLAIN_DATA) == []


@pytest.mark.parametrize("edge", CASE_EDGES)
def test_case_features_each_edge_alone(edge):
    case = CASE_EDGES[edge].validate()
    assert set(_required(case_features(case))) == {edge} | ALSO.get(edge, set())


@pytest.mark.parametrize("edge", DATA_EDGES)
def test_data_features_each_edge_alone(edge):
    assert _data_features(*DATA_EDGES[edge]) == [edge]


def test_data_features_of_an_empty_batch_are_empty():
    e = torch.zeros((0, 2), dtype=torch.int32)
    assert data_features(e, torch.zeros(0, dtype=torch.int32), torch.ones(1, dtype=torch.int32), 2, 1) == []


def _feed(cov: Coverage, edges) -> None:
    for edge in edges:
        if edge in CASE_EDGES:
            cov.add(CASE_EDGES[edge], [])
        else:
            cov.add(PLAIN, _data_features(*DATA_EDGES[edge]))


@pytest.mark.parametrize("left_out", REQUIRED_EDGES)
def test_missing_edges_lists_exactly_the_edge_not_reached(left_out):
    """Fed one case per edge except `left_out` (and except edges whose case cannot avoid it: M = 1 is never a
    multiple of BLOCK_M), missing_edges() names exactly what was not fed; fed the rest, nothing."""
    fed = [e for e in REQUIRED_EDGES if e != left_out and left_out not in ALSO.get(e, set())]
    cov = Coverage()
    _feed(cov, fed)
    want = [e for e in REQUIRED_EDGES if e not in fed]
    assert left_out in want and len(want) <= 2
    assert cov.missing_edges() == want
    assert cov.to_dict()["missing_edges"] == want
    _feed(cov, want)
    assert cov.missing_edges() == []


def test_missing_edges_of_an_empty_campaign_is_every_edge():
    cov = Coverage()
    assert cov.missing_edges() == list(REQUIRED_EDGES)
    cov.add(PLAIN, [])
    assert cov.missing_edges() == list(REQUIRED_EDGES)
    assert sum(cov.knobs["dtype"].values()) == 1 and cov.classes[PLAIN.coarse_class] == 1


# ---- minimiser --------------------------------------------------------------------------------------------
START = Case(
    seed=12345,
    dtype="bfloat16",
    m=29,
    top_k=4,
    num_experts=6,
    num_slots=4,
    rank=24,
    real_rank=17,
    k_dim=97,
    n_dim=45,
    num_slices=2,
    layout="per_routed",
    mul_routed_weight=True,
    offset=5,
    extra_cols=3,
    routing="distinct",
    slotting="all_with_base",
    disabled=(0, 1, 3),
    strided=True,
    align_slack=3,
    config=MoeLoraConfig(
        block_m=32,
        shrink=TileConfig(block_n=64, block_k=16, split_k=3, group_size_m=4, n_tiles=2),
        expand=TileConfig(block_n=16, block_k=64, num_warps=8, num_stages=3),
        align="torch",
    ),
).validate(True)


@pytest.mark.parametrize(
    "predicate, minimal",
    [
        pytest.param(
            lambda c: c.m >= 5 and c.top_k >= 2 and c.dtype == "float16",
            Case(m=5, top_k=2, dtype="float16"),
            id="m5-topk2-fp16",
        ),
        pytest.param(
            lambda c: c.num_slices == 2 and c.strided and 1 in c.disabled,
            Case(num_slices=2, strided=True, num_slots=2, disabled=(1,)),
            id="slices-strided-disabled1",
        ),
        pytest.param(
            lambda c: c.config.shrink.split_k >= 2 and c.k_dim > 40 and c.layout == "per_routed",
            Case(k_dim=41, layout="per_routed", config=MoeLoraConfig(shrink=TileConfig(split_k=2))),
            id="splitk-kdim-layout",
        ),
        pytest.param(
            lambda c: c.num_slots == 4 and 1 in c.disabled,
            Case(num_slots=4, disabled=(1,)),
            id="drop-the-last-disabled-slot",
        ),
        pytest.param(
            lambda c: c.rank >= 4 and c.n_dim >= 3, Case(rank=4, real_rank=1, n_dim=3), id="rank-not-real-rank"
        ),
        # from 64 the halfway step is 48, not a power of two: refused by validate, so 64 stays
        pytest.param(
            lambda c: c.config.shrink.block_n > 32,
            Case(config=MoeLoraConfig(shrink=TileConfig(block_n=64))),
            id="invalid-candidates-skipped",
        ),
    ],
)
def test_minimizer_lands_on_the_known_minimal_case(predicate, minimal):
    """The answer is worked out by hand from the predicate and the knobs' simplest values (Case's defaults),
    not by asking the minimiser's own candidate generator whether it is minimal."""
    start = START if predicate(START) else START.replace(dtype="float16")
    assert predicate(start)
    lines = []
    res = minimize(start, predicate, budget=60, interpreter=True, progress=lines.append)
    assert res.one_minimal
    assert len(lines) == res.steps and all(f"step {i + 1} " in ln for i, ln in enumerate(lines))
    assert res.case == minimal, res.case
    assert res.steps >= 1 and res.tries >= res.steps and 0 <= res.seconds <= 60


def test_minimizer_out_of_budget_says_so():
    res = minimize(START, lambda c: True, budget=0.0, interpreter=True)
    assert not res.one_minimal and res.case == START and res.steps == 0


def test_minimizer_keeps_a_case_nothing_reduces():
    """A predicate only the start satisfies: the start comes back, 1-minimal, every try rejected."""
    res = minimize(START, lambda c: c == START, budget=60, interpreter=True)
    assert res.one_minimal and res.case == START and res.steps == 0 and res.tries > 10


def test_describe_names_exactly_the_knobs_off_their_simplest_value():
    assert describe(Case()) == "(simplest case)"
    case = Case(m=5, strided=True, config=MoeLoraConfig(block_m=32, shrink=TileConfig(split_k=2)))
    assert describe(case) == "m=5 strided=True block_m=32 shrink.split_k=2"


def test_coverage_buckets_sizes_by_powers_of_two():
    cov = Coverage()
    for m in (0, 1, 2, 3, 4, 7, 8, 15, 16):
        cov.add(PLAIN.replace(m=m), [])
    assert dict(cov.knobs["m"]) == {"0": 1, "1": 1, "2": 1, "2-3": 1, "4-7": 2, "8-15": 2, "16-31": 1}
