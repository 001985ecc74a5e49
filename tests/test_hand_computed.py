"""The op's output worked out by hand on small integer inputs, checked against each reference and our kernels.

The references are compared with each other elsewhere (test_references.py); that cannot see a misreading
both share. Here the expectation comes from SPEC §2 alone: a loop over Python numbers, written without
reference/. Every input is a small integer and every routed weight a dyadic fraction, so each product and
sum is exact in fp64 and the final output exact in fp16, bf16 and fp32: any difference is a misreading.

The data is built so that every index matters (test_data_sees_every_misreading proves it): two enabled
slots plus a base-model token (-1) and a token on a disabled slot, k = 2 with different experts per
position and one token routing both positions to the same expert, S = 2 slices, offset > 0 with an extra
column after the slices, distinct per-position weights, and per-routed rows unlike the token rows.
"""

from __future__ import annotations

import random

import pytest
import torch
from moe_lora_fuzz.contract import OpArgs
from moe_lora_fuzz.kernels import MUTANTS, MoeLoraConfig, TileConfig, Workspace, fused_moe_lora
from moe_lora_fuzz.reference import moe_lora_fp64, moe_lora_naive

M, TOP_K, E, L, R, K, N, S = 5, 2, 2, 3, 2, 3, 2, 2
OFFSET, EXTRA = 1, 1
W = OFFSET + S * N + EXTRA
TOKEN_LORA = [2, -1, 1, 0, 1]  # slot 2, base model, slot 1, disabled slot 0, slot 1 again
ENABLED = [0, 1, 1]  # the last slot enabled: a slot grid one short drops it
TOPK_IDS = [[0, 1], [1, 0], [1, 0], [0, 1], [1, 1]]  # token 4: both positions on expert 1
WEIGHTS = [[0.5, 0.25], [0.75, 0.5], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]  # exact in every dtype


def _ints(rng: random.Random, *shape):
    """Nested lists of nonzero integers in [-2, 2]: |t| <= 12, |d| <= 48, outputs stay exact in bf16."""
    if len(shape) == 1:
        return [rng.choice((-2, -1, 1, 2)) for _ in range(shape[0])]
    return [_ints(rng, *shape[1:]) for _ in range(shape[0])]


_rng = random.Random(19)
X_TOKEN = _ints(_rng, M, K)  # per-token layout: row m
X_ROUTED = _ints(_rng, M * TOP_K, K)  # per-routed layout: row m*k + j
A = _ints(_rng, S, L, E, R, K)  # lora_a[s][l][e][r][c]
B = _ints(_rng, S, L, E, N, R)  # lora_b[s][l][e][n][r]
OUT0 = _ints(_rng, M, TOP_K, W)


def expected(layout: str, mul_routed_weight: bool, misread: str = "") -> list:
    """SPEC §2 by hand: out[m][j][offset + s*N + n] += w? * sum_r B[s,l,e][n][r] * sum_c A[s,l,e][r][c] row[c].

    `misread` computes what an implementation that gets one index wrong would write (for
    test_data_sees_every_misreading only)."""
    out = [[list(col) for col in tok] for tok in OUT0]
    for m in range(M):
        lane = TOKEN_LORA[m]
        if misread == "disabled-used":
            active = lane >= 0
        elif misread == "base-wraps-to-last":  # enabled[-1] in Python is the last slot's flag
            lane = lane % L
            active = bool(ENABLED[lane])
        else:
            active = lane >= 0 and ENABLED[lane]
        if not active:
            continue
        if misread == "slot":
            lane = 3 - lane  # the two enabled slots, 1 and 2, swapped
        for j in range(TOP_K):
            jj = 1 - j if misread == "position" else j
            e = TOPK_IDS[m][jj]
            if misread == "expert":
                e = 1 - e
            per_routed = (layout == "per_routed") != (misread == "layout")
            row = X_ROUTED[m * TOP_K + j] if per_routed else X_TOKEN[m]
            for s in range(S):
                sa = 1 - s if misread == "slice" else s
                t = [sum(A[sa][lane][e][r][c] * row[c] for c in range(K)) for r in range(R)]
                for n in range(N):
                    d = sum(B[s][lane][e][n][r] * t[r] for r in range(R))
                    applies = mul_routed_weight != (misread == "weight-flag")
                    if applies:
                        d *= WEIGHTS[m][1 - j] if misread == "weight-position" else WEIGHTS[m][j]
                    col = (0 if misread == "offset" else OFFSET) + s * N + n
                    out[m][j][col] += d
    return out


MISREADINGS = (
    "disabled-used",
    "base-wraps-to-last",
    "slot",
    "position",
    "expert",
    "layout",
    "slice",
    "weight-flag",
    "weight-position",
    "offset",
)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MODES = [
    pytest.param(layout, mrw, id=f"{layout}-{'mrw' if mrw else 'nomrw'}")
    for layout in ("per_token", "per_routed")
    for mrw in (False, True)
]


@pytest.mark.parametrize("layout, mrw", MODES)
@pytest.mark.parametrize("misread", MISREADINGS)
def test_data_sees_every_misreading(layout, mrw, misread):
    """The inputs are not degenerate: each single misreading changes the output (weight misreadings only
    matter with mul_routed_weight; the others in every mode)."""
    if misread == "weight-position" and not mrw:
        assert expected(layout, mrw, misread) == expected(layout, mrw)  # nothing to misread
        return
    assert expected(layout, mrw, misread) != expected(layout, mrw)


def test_expectation_is_exact_in_every_dtype():
    """Every expected output is an exactly representable value of fp16 and bf16 (fp32 holds more)."""
    for layout in ("per_token", "per_routed"):
        for mrw in (False, True):
            want = torch.tensor(expected(layout, mrw), dtype=torch.float64)
            for dt in (torch.float16, torch.bfloat16):
                assert torch.equal(want.to(dt).double(), want), (layout, mrw, dt)


def test_expectation_touches_exactly_the_active_pairs_columns():
    """Spot values worked out on paper: base (m=1) and disabled (m=3) rows and the columns outside
    [offset, offset + S*N) are the starting values; every active element moved."""
    want = expected("per_token", True)
    assert want[1] == OUT0[1] and want[3] == OUT0[3]
    for m in (0, 2, 4):
        for j in range(TOP_K):
            assert want[m][j][0] == OUT0[m][j][0] and want[m][j][W - 1] == OUT0[m][j][W - 1]
    # m=0 is on slot 2, position 1 routes to expert 1 with weight 0.25; first column of slice 0:
    row = X_TOKEN[0]
    t = [sum(A[0][2][1][r][c] * row[c] for c in range(K)) for r in range(R)]
    assert want[0][1][OFFSET] == OUT0[0][1][OFFSET] + 0.25 * (B[0][2][1][0][0] * t[0] + B[0][2][1][0][1] * t[1])


def _inputs(dtype: torch.dtype, layout: str):
    x = torch.tensor(X_ROUTED if layout == "per_routed" else X_TOKEN, dtype=dtype)
    lora_a = [torch.tensor(A[s], dtype=dtype) for s in range(S)]
    lora_b = [torch.tensor(B[s], dtype=dtype) for s in range(S)]
    return dict(
        x=x,
        topk_ids=torch.tensor(TOPK_IDS, dtype=torch.int32),
        topk_weights=torch.tensor(WEIGHTS, dtype=dtype),
        token_lora=torch.tensor(TOKEN_LORA, dtype=torch.int32),
        adapter_enabled=torch.tensor(ENABLED, dtype=torch.int32),
        lora_a=lora_a,
        lora_b=lora_b,
    )


def _op(dtype: torch.dtype, layout: str, mrw: bool) -> OpArgs:
    """The op's arguments, as the references take them."""
    out = torch.tensor(OUT0, dtype=dtype)
    return OpArgs(out=out, **_inputs(dtype, layout), mul_routed_weight=mrw, offset=OFFSET, layout=layout)


def _delta(layout: str, mrw: bool) -> torch.Tensor:
    """The expected delta as (M, k, S, N) fp64: expected output minus the starting output, in the slices."""
    got = torch.tensor(expected(layout, mrw), dtype=torch.float64) - torch.tensor(OUT0, dtype=torch.float64)
    return got[:, :, OFFSET : OFFSET + S * N].reshape(M, TOP_K, S, N)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout, mrw", MODES)
def test_fp64_reference_matches_hand_computation(dtype, layout, mrw):
    ref = moe_lora_fp64(_op(dtype, layout, mrw))
    assert torch.equal(ref.delta, _delta(layout, mrw))
    active = [[TOKEN_LORA[m] >= 0 and bool(ENABLED[TOKEN_LORA[m]])] * TOP_K for m in range(M)]
    assert ref.active.tolist() == active


def magnitudes(layout: str, mrw: bool) -> tuple[list, list]:
    """What the error bound is built from, by hand, as (M, k, S, N) nested lists (zero for inactive pairs):
    full = |w| sum_r |B[n][r]| sum_c |A[r][c]| |row[c]|,  mid = |w| sum_r |B[n][r]| |sum_c A[r][c] row[c]|."""
    full = [[[[0.0] * N for _ in range(S)] for _ in range(TOP_K)] for _ in range(M)]
    mid = [[[[0.0] * N for _ in range(S)] for _ in range(TOP_K)] for _ in range(M)]
    for m in range(M):
        lane = TOKEN_LORA[m]
        if lane < 0 or not ENABLED[lane]:
            continue
        for j in range(TOP_K):
            e, w = TOPK_IDS[m][j], (WEIGHTS[m][j] if mrw else 1.0)
            row = X_ROUTED[m * TOP_K + j] if layout == "per_routed" else X_TOKEN[m]
            for s in range(S):
                a, b = A[s][lane][e], B[s][lane][e]
                for n in range(N):
                    full[m][j][s][n] = w * sum(
                        abs(b[n][r]) * sum(abs(a[r][c] * row[c]) for c in range(K)) for r in range(R)
                    )
                    mid[m][j][s][n] = w * sum(
                        abs(b[n][r]) * abs(sum(a[r][c] * row[c] for c in range(K))) for r in range(R)
                    )
    return full, mid


@pytest.mark.parametrize("layout, mrw", MODES)
def test_fp64_reference_magnitudes_match_hand_computation(layout, mrw):
    """The magnitudes the oracle's bound scales with (F and G of fuzz/judgement/oracle.py's model)."""
    ref = moe_lora_fp64(_op(torch.float32, layout, mrw))
    full, mid = magnitudes(layout, mrw)
    assert ref.mag_full.tolist() == full
    assert ref.mag_mid.tolist() == mid
    assert full != mid  # cancellation somewhere: the two terms are told apart


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout, mrw", MODES)
def test_naive_reference_matches_hand_computation(dtype, layout, mrw):
    got = torch.from_numpy(moe_lora_naive(_op(dtype, layout, mrw)))
    assert torch.equal(got, _delta(layout, mrw))


SPLIT = MoeLoraConfig(
    block_m=16, shrink=TileConfig(block_n=16, block_k=16, split_k=2), expand=TileConfig(block_n=16, block_k=16)
)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout, mrw", MODES)
def test_our_kernels_match_hand_computation(dtype, layout, mrw, device):
    """The whole output, bitwise: the delta's columns of active pairs, and everything else unchanged."""
    kw = {
        k: (v.to(device) if isinstance(v, torch.Tensor) else [t.to(device) for t in v])
        for k, v in _inputs(dtype, layout).items()
    }
    out = torch.tensor(OUT0, dtype=dtype, device=device)
    config = SPLIT if dtype == torch.float32 else None  # one run through split-K shrink too
    fused_moe_lora(out, **kw, mul_routed_weight=mrw, offset=OFFSET, layout=layout, config=config)
    want = torch.tensor(expected(layout, mrw), dtype=torch.float64)
    assert torch.equal(out.cpu().double(), want), (out.cpu().double() - want).abs().amax()


MUTANT_CONFIG = MoeLoraConfig(
    block_m=16, shrink=TileConfig(block_n=16, block_k=16, split_k=2), expand=TileConfig(block_n=16, block_k=16)
)
# Left out, each for a reason of this tiny shape (the quality suite catches them on drawn cases):
# expand-splitk-grid: with R = 2 < BLOCK_K the first expand chunk holds the whole reduction;
# fp32-silent-tf32: small integers are exact in TF32;
# align-*: the torch align runs on CPU (config.align "auto"); grouped-tail-full: GROUP_SIZE_M is 1 here.
NOT_AT_THIS_SHAPE = {
    "expand-splitk-grid",
    "fp32-silent-tf32",
    "align-chunk-plus-one",
    "align-npow2-experts",
    "grouped-tail-full",
}
# the quantized mutants (they declare quantization) deviate only in the quantized kernels: tests/test_quant*.py
SEEDED = [m for m in MUTANTS if m not in NOT_AT_THIS_SHAPE and not MUTANTS[m].capabilities]


@pytest.mark.parametrize("mutant", SEEDED)
def test_seeded_kernel_bugs_disagree_with_hand_computation(mutant, device):
    """The kernel check above can fail: each seeded bug of our kernels (that this tiny shape can trigger)
    writes something else than the hand computation (fp32, per-token layout, routed weight on)."""
    kw = {
        k: (v.to(device) if isinstance(v, torch.Tensor) else [t.to(device) for t in v])
        for k, v in _inputs(torch.float32, "per_token").items()
    }
    padded = torch.full((M * TOP_K + 1, K), float("nan"), device=device)  # reads past x's M rows land on NaN
    padded[:M] = kw["x"]
    kw["x"] = padded[:M]
    out = torch.tensor(OUT0, dtype=torch.float32, device=device)
    # a poisoned workspace: an unzeroed split-K accumulation must not depend on what torch.empty happened to hold
    poisoned = Workspace(intermediate=torch.full((S, M * TOP_K, R), float("nan"), device=device))
    try:
        fused_moe_lora(
            out,
            **kw,
            mul_routed_weight=True,
            offset=OFFSET,
            layout="per_token",
            config=MUTANT_CONFIG,
            workspace=poisoned,
            deviation=MUTANTS[mutant].deviation,
        )
    except Exception:  # noqa: BLE001 - a crash also disagrees with the hand computation
        return
    assert not torch.equal(out.cpu().double(), torch.tensor(expected("per_token", True), dtype=torch.float64))


def test_fp64_refuses_an_x_of_neither_layout():
    op = _op(torch.float32, "per_token", False)
    op.x = torch.cat([op.x, op.x])[:4]  # 4 rows of K = 3: the message must count rows, not columns
    with pytest.raises(ValueError, match=r"^x: 4 rows; expected M=5 \(per_token\) or M\*k=10 \(per_routed\)$"):
        moe_lora_fp64(op)
