"""Quantized op (issue 30): our kernels on every scheme and scale granularity across the knobs, the generated data,
the case model (validation, migration, who gets quantized cases) and clean refusals of bad quantized input.
Kernel rows run under Triton's interpreter on CPU (~0.5 s each) and compiled on a GPU (--device cuda)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from moe_lora_fuzz.contract import QuantArgs
from moe_lora_fuzz.contract.quant import quantize_activation
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.records.repro import load
from moe_lora_fuzz.fuzz.space.capabilities import Capabilities, CapabilityError
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impls import resolve
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig, fused_moe_lora
from moe_lora_fuzz.kernels.moe_lora_quant_kernels import act_scale, group_amax, quantize  # the @triton.jit helpers

from tests.cases import BASE

SPLIT = MoeLoraConfig(
    block_m=16,
    shrink=TileConfig(block_n=16, block_k=16, split_k=2),
    expand=TileConfig(block_n=16, block_k=16, split_k=2),
)
WIDE_K = MoeLoraConfig(block_m=16, shrink=TileConfig(block_n=16, block_k=64), expand=TileConfig(block_n=16, n_tiles=2))
Q = dict(quant_block_n=16, quant_block_k=16)
ROWS = [
    pytest.param(
        dict(quant="fp8_w8a8", quant_group="block", config=SPLIT, **Q), id="fp8-block-dynamic-splitk-both-stages"
    ),
    pytest.param(
        dict(quant="int8_w8a8", quant_group="channel", act_scale="static", layout="per_routed", mul_routed_weight=True),
        id="int8-channel-static-per-routed-routed-weight",
    ),
    pytest.param(
        dict(quant="int8_w8a8", quant_group="block", config=WIDE_K, quant_block_n=16, quant_block_k=32),
        id="int8-block-BLOCK_K-clamped-to-32-int-dot-K-tail-ntiles",
    ),
    pytest.param(
        dict(quant="fp8_w8a8", quant_group="tensor", act_scale="static", dtype="float32", strided=True, config=WIDE_K),
        id="fp8-tensor-static-fp32-strided-fp8-dot",
    ),
    pytest.param(dict(quant="int8_w8a16", quant_group="block", dtype="bfloat16", **Q), id="w8a16-block-bf16"),
    pytest.param(
        dict(quant="int8_w8a16", quant_group="channel", config=SPLIT, slotting="all_with_base", disabled=(1,)),
        id="w8a16-channel-splitk-base-and-disabled-slot",
    ),
    pytest.param(
        dict(quant="fp8_w8a8", quant_group="channel", m=1, real_rank=5, num_slices=1, slotting="one_slot"),
        id="fp8-channel-m1-padded-rank-one-slice",
    ),
]


@pytest.mark.parametrize("knobs", ROWS)
def test_ours_quant_passes(knobs, device):
    case = BASE.replace(**knobs).validate(interpreter=device == "cpu")
    v = check(case, "ours-quant", device, diagnose=False)
    assert v.kind == "pass", v
    assert v.max_ratio > 0  # something was compared against the bound


def test_quant_none_is_the_unquantized_op():
    """quant=none materialises exactly the unquantized case: no scale buffer, weights in the case dtype."""
    t = materialize(BASE)
    assert t.quant is None and t.lora_a[0].dtype == torch.float16
    assert "quant" not in t.op().kwargs()
    assert not any("scale" in g.name for g in t.guarded)


@pytest.mark.parametrize("quant", ("fp8_w8a8", "int8_w8a8"))
def test_generated_codes_and_scales(quant):
    case = BASE.replace(quant=quant, quant_group="block", real_rank=5, **Q).validate()
    a, b = materialize(case), materialize(case)
    codes = a.lora_a[0]
    edge = 448.0 if quant == "fp8_w8a8" else -128
    assert (codes[:, :, 0, 0].float() == edge).all()  # the largest finite fp8 value / the int8 zero-point edge
    assert (codes[:, :, 5:].float() == 0).all() and (codes[:, :, :5].float() != 0).all()  # padded rank only
    assert torch.isfinite(codes.float()).all()
    s = a.quant.lora_a_scale[0]
    assert s.shape == (2, 4, 1, 3)  # (L, E, cdiv(R=8, 16), cdiv(K=40, 16))
    ratio = (s[:, :, :, 1:] / s[:, :, :, :-1]).log2().abs()
    assert (ratio >= 2).all()  # neighbouring K-blocks differ by a factor of 4 or more
    assert ((s[1] / s[0]).log2().abs() >= 2).all()  # so do slots
    for ga, gb in zip(a.guarded, b.guarded, strict=True):  # every buffer a pure function of the case
        assert torch.equal(ga.base.view(torch.uint8), gb.base.view(torch.uint8)), ga.name


def test_static_act_scales_and_saturation_edge():
    case = BASE.replace(quant="int8_w8a8", act_scale="static").validate()
    q = materialize(case).quant
    assert float(q.shrink_act_scale) == 2.0**-5  # |x| < 3 within 96 codes
    assert float(q.expand_act_scale) == 2.0**-4  # |t| ~ 1: up to 7.9 representable
    codes, _ = quantize_activation(torch.tensor([[10.0, -0.05]]), "int8_w8a8", 2, q.expand_act_scale)
    assert codes.tolist() == [[127, -1]]  # an intermediate above 127 * 2^-4 saturates


def test_validation_keeps_unused_quant_knobs_at_default():
    with pytest.raises(ValueError, match="case.quant_group"):
        Case(quant_group="block").validate()
    with pytest.raises(ValueError, match="case.quant_block_k"):
        Case(quant="fp8_w8a8", quant_block_k=64).validate()  # tensor scales have no blocks
    with pytest.raises(ValueError, match="case.act_scale"):
        Case(quant="int8_w8a16", act_scale="static").validate()  # w8a16 does not quantize activations
    with pytest.raises(ValueError, match="case.quant_block_n"):
        Case(quant="fp8_w8a8", quant_group="block", quant_block_n=24).validate()


def test_old_repro_files_load_unquantized():
    for path in sorted((Path(__file__).parent / "regressions").glob("*.json")):
        assert json.loads(path.read_text())["version"] < 3
        case = load(path).case
        assert (case.quant, case.quant_group, case.act_scale) == ("none", "tensor", "dynamic"), path


def test_only_declaring_implementations_get_quantized_cases():
    plain = Case(seed=5, quant="fp8_w8a8").validate()
    assert resolve("ours").fit(plain).quant == "none"  # ours declares nothing: never quantized
    fitted = {resolve("ours-quant").fit(Case(seed=s)) for s in range(40)}
    assert {c.quant for c in fitted} == {"fp8_w8a8", "int8_w8a8", "int8_w8a16"}
    assert {c.quant_group for c in fitted} == {"tensor", "channel", "block"}
    for c in fitted:
        assert c.validate() is c and resolve("ours-quant").fit(c) == c  # valid, and fitting is idempotent
    only = Capabilities.parse({"quant": ["int8_w8a8"], "quant_groups": ["block"], "act_scales": ["static"]})
    c = only.project(Case(seed=9))
    assert (c.quant, c.quant_group, c.act_scale) == ("int8_w8a8", "block", "static")


def test_scale_groups_declared_per_scheme():
    """vLLM's quantized op takes no block scales for int8_w8a16 (it asserts so): declared, never drawn."""
    per = Capabilities.parse({"quant": ["fp8_w8a8", "int8_w8a16"], "quant_groups": {"int8_w8a16": ["channel"]}})
    fitted = [per.project(Case(seed=s)) for s in range(80)]
    assert {c.quant_group for c in fitted if c.quant == "int8_w8a16"} == {"channel"}
    assert {c.quant_group for c in fitted if c.quant == "fp8_w8a8"} == {"tensor", "channel", "block"}
    assert per.to_dict()["quant_groups"] == {"int8_w8a16": ["channel"]}
    with pytest.raises(CapabilityError, match=r"capabilities.quant_groups.int8_w8a16: must be a non-empty subset"):
        Capabilities.parse({"quant": ["int8_w8a16"], "quant_groups": {"int8_w8a16": ["rows"]}})
    with pytest.raises(CapabilityError, match=r"capabilities.quant_groups: 'none' is not a quantization scheme"):
        Capabilities.parse({"quant": ["int8_w8a16"], "quant_groups": {"none": ["tensor"]}})


def test_bad_quant_arguments_are_refused_cleanly(device):
    t = materialize(BASE.replace(quant="fp8_w8a8", quant_group="channel").validate(), device)
    kw = t.op_kwargs()
    q = kw["quant"]
    bad = QuantArgs(q.scheme, q.group, 16, 16, q.act, [s[:, :, :-1] for s in q.lora_a_scale], q.lora_b_scale)
    with pytest.raises(ValueError, match=r"quant.lora_a_scale\[0\]: shape"):
        fused_moe_lora(**{**kw, "quant": bad})
    with pytest.raises(TypeError, match="lora_a"):  # codes of another scheme
        fused_moe_lora(
            **{**kw, "quant": QuantArgs("int8_w8a8", q.group, 16, 16, q.act, q.lora_a_scale, q.lora_b_scale)}
        )
    static = QuantArgs("fp8_w8a8", q.group, 16, 16, "static", q.lora_a_scale, q.lora_b_scale)
    with pytest.raises(TypeError, match="quant.shrink_act_scale"):
        fused_moe_lora(**{**kw, "quant": static})


def test_8bit_dots_and_fp8_conversion_are_exact(device):
    """What the quantized kernels rely on, where they run (Triton's interpreter on CPU: nothing to patch there):
    int8 x int8 dots of 32-wide tiles are exact, fp8 x fp8 ones are fp32 sums of exact products (within 32 fp32
    roundings; Hopper's 14-bit fp8 accumulation within 2^-13 each), and fp32 -> e4m3fn rounds to nearest even."""
    import triton
    import triton.language as tl

    @triton.jit
    def dot_kernel(a_ptr, b_ptr, o_ptr, c_ptr, v_ptr, INT: tl.constexpr):
        i = tl.arange(0, 32)
        a = tl.load(a_ptr + i[:, None] * 32 + i[None, :])
        b = tl.load(b_ptr + i[:, None] * 32 + i[None, :])
        part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32) if INT else tl.dot(a, b)
        tl.store(o_ptr + i[:, None] * 32 + i[None, :], part)
        tl.store(c_ptr + i, tl.load(v_ptr + i).to(tl.float8e4nv))

    g = torch.Generator().manual_seed(0)
    edges = torch.tensor(
        [31.0, -31.5, 1e-3, 1.5 * 2.0**-10, 500.0, -(2.0**-9), 15.9, 447.0]
    )  # carry, subnormal, saturation
    v = torch.cat([edges, (torch.randn(24, generator=g) * 100).clamp(-440, 440)])
    for dt, is_int in ((torch.float8_e4m3fn, False), (torch.int8, True)):
        raw = (torch.randn(2, 32, 32, generator=g) * 30).clamp(-127, 127)
        a, b = (raw if not is_int else raw.round()).to(dt).to(device)
        out = torch.empty(32, 32, dtype=torch.float32, device=device)
        conv = torch.empty(32, dtype=torch.float8_e4m3fn, device=device)
        dot_kernel[(1,)](a, b, out, conv, v.to(device), INT=is_int)
        exact = a.double().cpu() @ b.double().cpu()
        unit = 0.0 if is_int else (2.0**-13 if device == "cuda" else 2.0**-24)
        allowed = 32 * unit * (a.double().cpu().abs() @ b.double().cpu().abs())
        assert ((out.double().cpu() - exact).abs() <= allowed).all(), dt
        assert torch.equal(conv.cpu().float(), v.clamp(-448, 448).to(torch.float8_e4m3fn).float())  # satfinite


@pytest.mark.parametrize(
    "mutant,knobs",
    [
        ("quant-scale-next-block", dict(quant="fp8_w8a8", quant_group="block", **Q)),
        ("quant-channel-scale-by-k", dict(quant="int8_w8a8", quant_group="channel")),
        ("quant-scale-slot0", dict(quant="int8_w8a16", quant_group="tensor", slotting="no_base")),
        ("quant-act-scale-ignored", dict(quant="fp8_w8a8", quant_group="tensor", act_scale="static")),
    ],
)
def test_each_quant_mutant_fails_a_case_of_its_class(mutant, knobs, device):
    """The seeded bugs of the quantized kernels, one case each (the quality suite finds them by campaign)."""
    case = BASE.replace(**knobs).validate(interpreter=device == "cpu")
    assert check(case, "ours-quant", device, diagnose=False).kind == "pass"
    v = check(case, f"mutant:{mutant}", device, diagnose=False)
    assert v.kind in ("mismatch", "nonfinite"), v


@pytest.mark.parametrize("scheme", ("fp8_w8a8", "int8_w8a8"))
def test_in_kernel_activation_quantization_is_the_contracts_bit_for_bit(scheme, device):
    """The kernel quantizes w8a8 activations itself (kernels/moe_lora_quant_kernels.py): its scales and codes are
    contract.quant.quantize_activation's, bit for bit, for a row group read as one tile and for K-groups read in
    pieces (group_amax), on rounding ties, e4m3fn carries and subnormals, saturation and rows of zeros."""
    import triton
    import triton.language as tl

    @triton.jit
    def quant_kernel(v_ptr, q_ptr, s_ptr, K, GROUP: tl.constexpr, QUANT: tl.constexpr, PIECE: tl.constexpr):
        rows = tl.arange(0, 8)
        keep = rows < 8
        for start in range(0, K, GROUP):  # one K-group of GROUP columns at a time
            stop = tl.minimum(start + GROUP, K)
            sx = act_scale(group_amax(v_ptr + rows[:, None] * K, 1, start, stop, keep, 8, PIECE), QUANT)
            cols = start + tl.arange(0, GROUP)
            mask = keep[:, None] & (cols < stop)[None, :]
            a = tl.load(v_ptr + rows[:, None] * K + cols[None, :], mask=mask, other=0.0)
            tl.store(q_ptr + rows[:, None] * K + cols[None, :], quantize(a, sx, QUANT), mask=mask)
            tl.store(s_ptr + rows * tl.cdiv(K, GROUP) + start // GROUP, sx)

    g = torch.Generator().manual_seed(3)
    k = 48  # two K-groups of 32, the second one short
    v = torch.randn(8, k, generator=g) * torch.logspace(-6, 3, 8)[:, None]
    v[0] = 0.0  # scale 1, codes 0
    amax = 127.0 if scheme == "int8_w8a8" else 448.0
    v[1, :8] = torch.tensor([amax, 2.5, 3.5, -2.5, 0.5, -0.5, 126.5, -1.5])  # s = 1: ties to even
    v[2, :8] = torch.tensor([amax, 31.0, -31.5, 1e-3, 1.5 * 2.0**-10, -(2.0**-9), 15.9, 447.0])  # carries, subnormals
    v[3, 40:] = 0.0  # a group partly of zeros
    for dtype in (torch.float32, torch.bfloat16):
        x = v.to(dtype)
        for group, piece in ((32, 32), (32, 16), (64, 16)):  # tile = group, group read in pieces, one row group
            want_q, want_s = quantize_activation(x, scheme, group)
            q = torch.empty(8, k, dtype=want_q.dtype, device=device)
            s = torch.empty(8, -(-k // group), dtype=torch.float32, device=device)
            quant_kernel[(1,)](x.to(device), q, s, k, GROUP=group, QUANT=1 if scheme == "fp8_w8a8" else 2, PIECE=piece)
            assert torch.equal(s.cpu(), want_s), (dtype, group)
            assert torch.equal(q.cpu().view(torch.uint8), want_q.view(torch.uint8)), (dtype, group)


def test_a_quantized_call_makes_the_unquantized_calls_device_ops(device, monkeypatch):
    """The kernel quantizes w8a8 activations itself, so a quantized call launches what the unquantized one does (two
    matmul launches) and the same torch ops, nothing more (the host used to quantize with ~12 torch ops a stage: ~400
    µs a call on an H100). The matmul kernel is stubbed: only the host's work is counted."""
    from collections import Counter

    import moe_lora_fuzz.kernels.moe_lora as host
    from torch.profiler import ProfilerActivity, profile

    launches = []

    class Stub:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append(kwargs.get("QUANT", 0))

    monkeypatch.setattr(host, "moe_lora_matmul_kernel", Stub())

    def ops(knobs) -> Counter:
        kw = materialize(BASE.replace(**knobs).validate(interpreter=device == "cpu"), device).op_kwargs()
        fused_moe_lora(**kw, config=SPLIT)  # builds the cached pointer tables and slot list: later calls do not
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fused_moe_lora(**kw, config=SPLIT)
        return Counter(e.name for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))

    plain = ops({})
    for knobs in (
        dict(quant="fp8_w8a8", quant_group="block", **Q),
        dict(quant="int8_w8a8", quant_group="channel"),
        dict(quant="int8_w8a8", quant_group="tensor", act_scale="static"),
        dict(quant="int8_w8a16", quant_group="channel"),
    ):
        launches.clear()
        assert ops(knobs) == plain, knobs
        assert len(launches) == 4 and all(launches), launches  # shrink and expand (twice), all quantized
