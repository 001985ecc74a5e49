"""Named edge cases shared by the kernel tests: each row says which edge of SPEC §3 it hits."""

import pytest
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig

SMALL = MoeLoraConfig(block_m=16, shrink=TileConfig(block_n=16, block_k=16), expand=TileConfig(block_n=16, block_k=16))
BASE = Case(
    seed=1,
    dtype="float16",
    m=7,
    top_k=2,
    num_experts=4,
    num_slots=2,
    rank=8,
    real_rank=8,
    k_dim=40,
    n_dim=24,
    num_slices=2,
    layout="per_token",
    mul_routed_weight=False,
    offset=2,
    extra_cols=1,
    routing="uniform",
    slotting="random",
    config=SMALL,
)


def _tiles(**kw) -> MoeLoraConfig:
    shrink = {k[7:]: v for k, v in kw.items() if k.startswith("shrink_")}
    expand = {k[7:]: v for k, v in kw.items() if k.startswith("expand_")}
    return MoeLoraConfig(
        block_m=kw.get("block_m", 16),
        shrink=TileConfig(**{"block_n": 16, "block_k": 16, **shrink}),
        expand=TileConfig(**{"block_n": 16, "block_k": 16, **expand}),
    )


EDGES = [
    pytest.param(BASE, id="baseline"),
    pytest.param(BASE.replace(m=1), id="m1"),  # a single token
    pytest.param(BASE.replace(m=0), id="empty-batch"),  # nothing to do, nothing may change
    pytest.param(BASE.replace(m=33, k_dim=97, n_dim=37, rank=13, real_rank=13), id="all-tails"),  # M,K,N,R off-block
    pytest.param(BASE.replace(layout="per_routed", mul_routed_weight=True), id="per-routed-mrw"),  # the down proj
    pytest.param(BASE.replace(layout="per_token", mul_routed_weight=True), id="per-token-mrw"),  # decoupled knobs
    pytest.param(BASE.replace(layout="per_routed"), id="per-routed-no-mrw"),  # decoupled the other way
    pytest.param(BASE.replace(top_k=1, layout="per_routed"), id="top-k-1"),  # both layouts coincide
    pytest.param(BASE.replace(k_dim=97, config=_tiles(shrink_split_k=3)), id="shrink-splitk-3-uneven"),
    pytest.param(BASE.replace(rank=40, real_rank=40, config=_tiles(expand_split_k=2)), id="expand-splitk-2"),
    pytest.param(BASE.replace(dtype="bfloat16"), id="bf16"),  # interpreter upcast path on CPU
    pytest.param(BASE.replace(dtype="float32", mul_routed_weight=True), id="fp32-ieee"),
    pytest.param(BASE.replace(slotting="all_base"), id="all-base-tokens"),  # no slot used at all
    pytest.param(BASE.replace(m=9, num_slots=3, slotting="all_with_base"), id="base-with-every-slot"),
    pytest.param(BASE.replace(disabled=(0,), slotting="no_base"), id="disabled-adapter"),
    pytest.param(BASE.replace(routing="one_hot"), id="all-on-one-expert"),
    pytest.param(BASE.replace(num_experts=8, routing="sparse"), id="empty-experts"),
    pytest.param(BASE.replace(num_experts=2, top_k=4), id="duplicate-experts"),  # k > E forces duplicates
    pytest.param(BASE.replace(real_rank=3), id="real-rank-below-R"),  # padded adapter rows are zero
    pytest.param(BASE.replace(offset=5, extra_cols=4), id="offset-extra-columns"),
    pytest.param(BASE.replace(strided=True), id="strided-views"),
    pytest.param(BASE.replace(align_slack=2), id="oversized-align-buffers"),
    pytest.param(BASE.replace(num_slices=1), id="one-slice"),
    pytest.param(
        BASE.replace(m=40, top_k=4, config=_tiles(shrink_group_size_m=4, expand_group_size_m=8)), id="grouped-pid-order"
    ),
    pytest.param(BASE.replace(config=_tiles(block_m=64, shrink_block_n=64, shrink_block_k=64)), id="blocks-over-dims"),
    pytest.param(BASE.replace(num_slots=4, m=12, slotting="one_slot"), id="slots-without-tokens"),
    # programs looping over BLOCK_N tiles, the last one partly past the columns (shrink: S*R = 26 of 32)
    pytest.param(
        BASE.replace(n_dim=37, rank=13, real_rank=13, config=_tiles(shrink_n_tiles=2, expand_n_tiles=2)),
        id="n-tiles-loop",
    ),
]
