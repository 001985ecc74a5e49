"""The implementation protocol: launch configuration passed to implementations that take it, declared
capabilities (the case space follows them, --probe-contract checks the refusals), declared fp32 precision."""

from __future__ import annotations

import pytest
from moe_lora_fuzz.contract import MoeLoraConfig, TileConfig
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.space.capabilities import Capabilities, CapabilityError
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve, wrap

from tests import protocol_impls as P
from tests.example_impl import torch_moe_lora

FP32 = Case(
    seed=3,
    dtype="float32",
    m=4,
    top_k=2,
    num_experts=2,
    num_slots=2,
    rank=4,
    real_rank=4,
    k_dim=16,
    n_dim=16,
    slotting="no_base",
)  # short reductions: TF32 input rounding exceeds the IEEE bound


def _impl(fn, name="tests/protocol_impls.py:x"):
    return wrap(name, fn)


def test_declared_tf32_runs_clean_and_undeclared_tf32_is_named(device):
    assert check(FP32, "declared", device, impl=_impl(P.tf32_declared)).kind == "pass"
    v = check(FP32, "undeclared", device, impl=_impl(P.tf32_undeclared))
    assert v.kind == "mismatch" and "TF32" in v.message, v.message


def test_ieee_mismatch_beyond_tf32_is_not_blamed_on_tf32(device):
    def scaled(**kw):  # a 1% error: not what TF32 inputs give
        torch_moe_lora(**kw)
        kw["out"].mul_(1.01)

    v = check(FP32, "scaled", device, impl=_impl(scaled))
    assert v.failed and "TF32" not in v.message, v.message


def test_probe_contract_refusal_and_unchecked_precondition(device):
    outside = FP32.replace(strided=True)
    assert check(outside, "checked", device, impl=_impl(P.aligned_checked), probe="strided").kind == "refused"
    v = check(outside, "unchecked", device, impl=_impl(P.aligned_unchecked), probe="strided")
    assert v.kind == "unchecked-precondition" and "strided" in v.message, v.message


def test_a_refusal_inside_the_declared_space_is_a_finding(device):
    """Without --probe-contract a ValueError on a valid case is an exception finding, never `refused`."""
    v = check(FP32.replace(strided=True), "checked", device, impl=_impl(P.aligned_checked))
    assert v.kind == "exception"


def test_config_is_passed_to_implementations_that_take_it(device):
    seen = []

    def with_config(*, config, **kw):
        seen.append(config)
        torch_moe_lora(**kw)

    impl = _impl(with_config)
    assert impl.takes_config
    cfg = MoeLoraConfig(block_m=32, shrink=TileConfig(split_k=2), expand=TileConfig(block_n=64, split_k=3))
    assert check(FP32.replace(config=cfg), "cfg", device, impl=impl).kind == "pass"
    assert seen == [cfg]
    assert not _impl(torch_moe_lora).takes_config


def test_configuration_twin_runs_for_external_implementations_that_take_config(device):
    def wrong_at_block_16(*, config, out, **kw):
        torch_moe_lora(out=out, **kw)
        if config.block_m == 16:  # the twin's configuration
            out.mul_(1.5)

    case = FP32.replace(config=MoeLoraConfig(block_m=32))
    assert check(case, "twin", device, impl=_impl(wrong_at_block_16)).kind == "pass"
    assert check(case, "twin", device, impl=_impl(wrong_at_block_16), metamorphic=True).kind == "metamorphic"


def test_fit_neutralises_knobs_an_implementation_never_sees():
    case = FP32.replace(config=MoeLoraConfig(block_m=64, expand=TileConfig(split_k=4)), align_slack=3)
    plain = _impl(torch_moe_lora).fit(case)
    assert plain.config == MoeLoraConfig() and plain.align_slack == 0
    assert resolve("ours").fit(case) == case


def test_fit_draws_inside_the_declared_space():
    caps = Capabilities.parse(
        {
            "dtypes": ["float16"],
            "layouts": ["per_routed"],
            "alignment": 16,
            "max_rank": 8,
            "split_k": {"expand": 1},
            "mul_routed_weight": False,
        }
    )
    case = FP32.replace(
        strided=True,
        layout="per_token",
        mul_routed_weight=True,
        k_dim=100,
        rank=12,
        real_rank=12,
        config=MoeLoraConfig(expand=TileConfig(split_k=4)),
    )
    got = caps.project(case)
    assert (got.dtype, got.layout, got.mul_routed_weight, got.strided) == ("float16", "per_routed", False, False)
    assert got.k_dim % 8 == 0 and got.rank <= 8 and got.config.expand.split_k == 1
    assert caps.project(got) == got  # inside already: unchanged
    broken = {what for what, _ in caps.violations(got)}
    assert {
        "dtype float32",
        "layout per_token",
        "mul_routed_weight=True",
        "rank 9 > max_rank",
        "expand split_k 2",
    } <= broken


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"dtype": ["float16"]}, r"capabilities\.dtype: unknown key"),
        ({"dtypes": ["float64"]}, r"capabilities\.dtypes: must be a non-empty subset"),
        ({"fp32_precision": "fast"}, r"capabilities\.fp32_precision: must be one of"),
        ({"alignment": 12}, r"capabilities\.alignment: must be a power of two"),
        ({"split_k": {"expand": 0}}, r"capabilities\.split_k"),
        ([1], r"capabilities: expected a dict"),
    ],
)
def test_malformed_capabilities_are_refused_with_the_key(raw, match):
    with pytest.raises(CapabilityError, match=match):
        Capabilities.parse(raw)

    def impl(**kw):
        pass

    impl.capabilities = raw
    with pytest.raises(ImplError, match=match):
        wrap("x.py:impl", impl)
