"""vllm-fp8 (fuzz/upstream/vllm_fp8.py): vLLM's quantized op in its convention, driven from the case. A fake file
with vLLM 0.34's `_fused_moe_lora_fp8` signature (tests/fakes/vllm_fused_moe_lora_fp8.py, our code) reads every
quantized keyword; judged correct on every scheme and granularity, it shows the adapter maps them as the contract
says, and its seeded bug (the activation scale ignored, as vLLM 0.34's kernel does) is a mismatch."""

from __future__ import annotations

from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.targets.impls import resolve

from tests.cases import BASE

FAKES = Path(__file__).parent / "fakes"
FAKE = f"vllm-fp8:{FAKES}/vllm_fused_moe_lora_fp8.py"
BUGGY = f"vllm-fp8:{FAKES}/vllm_fused_moe_lora_fp8_buggy.py"
ROWS = [
    ("fp8_w8a8", "block", "dynamic"),
    ("int8_w8a8", "channel", "static"),
    ("fp8_w8a8", "tensor", "static"),
    ("int8_w8a16", "channel", "dynamic"),
]


def _case(impl, quant, group, act, **kw):
    c = BASE.replace(quant=quant, quant_group=group, act_scale=act, quant_block_n=16, quant_block_k=16, **kw)
    return impl.fit(c).validate()


@pytest.mark.parametrize("quant,group,act", ROWS, ids=["/".join(r) for r in ROWS])
def test_fake_in_vllm_convention_passes(quant, group, act):
    impl = resolve(FAKE)
    assert impl.capabilities.quant == ("fp8_w8a8", "int8_w8a8", "int8_w8a16")
    case = _case(impl, quant, group, act, mul_routed_weight=True, layout="per_routed")
    v = check(case, FAKE, impl=impl, diagnose=False)
    assert v.kind == "pass", v


def test_activation_scale_ignored_is_a_mismatch():
    impl = resolve(BUGGY)
    v = check(_case(impl, "int8_w8a8", "tensor", "dynamic"), BUGGY, impl=impl, diagnose=False)
    assert v.kind == "mismatch", v


def test_w8a16_with_block_scales_is_never_drawn_and_refused_in_one_line():
    impl = resolve(FAKE)
    assert impl.fit(_case(impl, "int8_w8a16", "block", "dynamic")).quant_group != "block"  # a declared precondition
    given = BASE.replace(
        quant="int8_w8a16", quant_group="block", act_scale="dynamic", quant_block_n=16, quant_block_k=16
    )
    v = check(given.validate(), FAKE, impl=impl, diagnose=False)  # handed one anyway (a repro file): a clean refusal
    assert v.kind == "exception" and "NotImplementedError" in v.message and "block_shape" in v.message, v


def test_unquantized_cases_are_never_given():
    impl = resolve(FAKE)
    assert impl.fit(BASE).quant != "none"  # it declares quantized schemes only
