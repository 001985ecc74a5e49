"""Tightness of the oracle's error bound, per dtype: a result just outside it fails, one just inside passes.

The implementations here are fakes that write the fp64 reference's answer rounded to the output dtype and
then move chosen elements by a controlled amount. Two kinds of checks:
- at the edge: one element moved to the last representable value within the bound passes, the next one up
  is a mismatch (the comparison itself, ulp-exact);
- at the scale: a result off by one ulp everywhere must pass, while a pure scale error of the delta a few
  dozen unit roundoffs wide must be a mismatch. The unit roundoffs are written here as IEEE facts, not read
  from fuzz/judgement/oracle.py, so a bound that grew (say fp32's unit roundoff raised from 2^-24 to 2^-11) goes red.
"""

from __future__ import annotations

import pytest
import torch
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig
from moe_lora_fuzz.reference import moe_lora_fp64

from tests.cases import SMALL

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Relative scale error of the delta that must be a mismatch: fp16 and bf16 32 unit roundoffs (2^-11 and
# 2^-8); fp32 2^-13, i.e. 0.012% (its bound is dominated by the K-term of fp32 accumulation, ~2^-22 K |A||x|)
SCALE_ERROR = {"float16": 2.0**-6, "bfloat16": 2.0**-3, "float32": 2.0**-13}
OFFSET, N_DIM, S = 1, 4, 2


def _case(dtype: str) -> Case:
    return Case(
        seed=3,
        dtype=dtype,
        m=4,
        top_k=2,
        num_experts=2,
        num_slots=2,
        rank=4,
        real_rank=4,
        k_dim=8,
        n_dim=N_DIM,
        num_slices=S,
        offset=OFFSET,
        extra_cols=1,
        slotting="no_base",
        mul_routed_weight=True,
        config=SMALL,
    )


def _writes(scale: float = 1.0, at: tuple | None = None, value: float | None = None, ulps: int = 0):
    """A fake implementation: out0 + delta64 * scale rounded to the dtype on every active element, moved by
    `ulps` units in the last place; then out[at] = value if given."""

    def impl(t) -> None:
        ref = moe_lora_fp64(t.op())
        m, k = t.topk_ids.shape
        cols = slice(OFFSET, OFFSET + S * N_DIM)
        got = (t.out[:, :, cols].double() + ref.delta.reshape(m, k, S * N_DIM) * scale).to(t.out.dtype)
        if ulps:
            got = _step(got, ulps)
        t.out[:, :, cols] = torch.where(ref.active[:, :, None], got, t.out[:, :, cols])
        if at is not None:
            t.out[at] = value

    return impl


def _step(v: torch.Tensor, ulps: int) -> torch.Tensor:
    """v moved `ulps` representable values up (toward +inf), elementwise; v is finite and nonzero."""
    ints = {2: torch.int16, 4: torch.int32}[v.element_size()]
    bits = v.view(ints)
    moved = torch.where(v > 0, bits + ulps, bits - ulps)
    return moved.to(ints).view(v.dtype)


def _edge(y: float, bound: float, dtype: torch.dtype) -> tuple[float, float]:
    """(last value of dtype at or below y + bound, the next one): the edge of the bound above y."""
    v = torch.tensor([y + bound], dtype=torch.float64).to(dtype)  # within one ulp of the edge
    while float(v) - y > bound:
        v = _step(v, -1)
    while float(_step(v, 1)) - y <= bound:
        v = _step(v, 1)
    return float(v), float(_step(v, 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounded_reference_passes(dtype):
    v = check(_case(dtype), "fake", impl=_writes())
    assert v.kind == "pass", v


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_ulp_inside_the_bound_passes_one_ulp_outside_fails(dtype):
    case = _case(dtype)
    probe = check(case, "fake", impl=_writes(at=(0, 0, OFFSET + 1), value=100.0))  # a gross error reports the bound
    assert probe.kind == "mismatch", probe
    worst = probe.worst[0]
    assert worst["index"] == [0, 0, OFFSET + 1]
    y, bound = worst["expected"], worst["bound"]
    assert bound > 0
    inside, outside = _edge(y, bound, DTYPES[dtype])
    assert inside - y <= bound < outside - y
    at = (0, 0, OFFSET + 1)
    assert check(case, "fake", impl=_writes(at=at, value=inside)).kind == "pass"
    v = check(case, "fake", impl=_writes(at=at, value=outside))
    assert v.kind == "mismatch", v
    assert v.worst[0]["index"] == list(at) and 1 < v.max_ratio


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ulps", (1, -1))
def test_one_ulp_off_everywhere_passes(dtype, ulps):
    """A kernel whose every element is one ulp away from the correctly rounded answer is correct: a bound
    smaller than that (a unit roundoff lowered in the model) flags our kernels."""
    v = check(_case(dtype), "fake", impl=_writes(ulps=ulps))
    assert v.kind == "pass", v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sign", (1, -1))
def test_small_scale_error_is_a_mismatch(dtype, sign):
    """A delta scaled by 1 +- SCALE_ERROR (a few dozen unit roundoffs: fp16 1.6%, bf16 12.5%, fp32 0.012%)
    must exceed the bound somewhere: a bound that grew (e.g. fp32's unit roundoff raised to 2^-11) passes it."""
    v = check(_case(dtype), "fake", impl=_writes(scale=1 + sign * SCALE_ERROR[dtype]))
    assert v.kind == "mismatch", v


def test_fp32_tenth_of_a_percent_is_a_mismatch():
    """The example from the issue: a 0.1% fp32 error is never within the bound of an fp32 result."""
    v = check(_case("float32"), "fake", impl=_writes(scale=1.001))
    assert v.kind == "mismatch" and v.max_ratio > 10, v


def test_scale_error_passes_when_half_as_large_in_fp16():
    """Tightness from below for the half-precision bound: a scale error of 2^-10 (about two unit roundoffs)
    stays inside it, so SCALE_ERROR is not failing only because of a needlessly small bound."""
    v = check(_case("float16"), "fake", impl=_writes(scale=1 + 2.0**-10))
    assert v.kind == "pass", v


UNIT = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}  # IEEE unit roundoffs
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149}  # smallest subnormals
ACC = 2.0**-22  # fp32 accumulation, with the factor 2 the model allows for tensor cores


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("expand_split_k", (1, 2))
def test_bound_is_the_documented_model(dtype, expand_split_k):
    """The bound the oracle reports is, element by element, the model in fuzz/judgement/oracle.py's docstring:
        2 * ((K+2) v F + (u_t + (R+2) v) G + 2 SPLIT_K_expand u (|out0| + G) + 4 tiny)
    with F = |w||B|(|A||x|), G = |w||B||A x| (the reference's magnitudes, checked by hand in
    test_hand_computed.py), u_t = u for fp16/bf16 and 0 for fp32. Pins the safety factor and every term:
    the edge and scale tests above only see changes of a factor of two or more in some of them."""
    tile = TileConfig(block_n=16, block_k=16)
    case = _case(dtype).replace(
        config=MoeLoraConfig(block_m=16, shrink=tile, expand=TileConfig(block_n=16, block_k=16, split_k=expand_split_k))
    )
    probe = check(case, "fake", impl=_writes(scale=3.0))
    assert probe.kind == "mismatch" and len(probe.worst) == 5, probe
    from moe_lora_fuzz.fuzz.data.tensors import materialize

    t = materialize(case, "cpu")
    assert case.mul_routed_weight
    ref = moe_lora_fp64(t.op())
    u = UNIT[dtype]
    u_t = 0.0 if dtype == "float32" else u
    for w in probe.worst:
        m, j, col = w["index"]
        s, n = divmod(col - OFFSET, N_DIM)
        f, g = float(ref.mag_full[m, j, s, n]), float(ref.mag_mid[m, j, s, n])
        want = 2 * (
            (case.k_dim + 2) * ACC * f
            + (u_t + (case.rank + 2) * ACC) * g
            + 2 * expand_split_k * u * (abs(w["before"]) + g)
            + 4 * TINY[dtype]
        )
        assert w["bound"] == pytest.approx(want, rel=1e-12), (w, want)
