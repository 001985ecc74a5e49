"""The fuzzer's machinery: case model, strategies, determinism, oracle exact checks, minimiser, corpus."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from moe_lora_fuzz.fuzz.data.tensors import Fill, materialize
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.records.repro import load
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, RandomSource, generate
from moe_lora_fuzz.fuzz.space.strategies import cases
from moe_lora_fuzz.fuzz.triage.minimize import candidates, minimize

from tests.cases import BASE

REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("*.json"))


@given(case=cases())
def test_generated_cases_pass_the_oracle(case: Case, device):
    """Hypothesis over the shared knob space: our kernels never fail (profile: HYPOTHESIS_PROFILE)."""
    v = check(case, "ours", device)
    assert v.kind == "pass", f"{v.kind}: {v.message}\n{v.worst}"


@given(cases())
def test_cases_round_trip_through_json(case: Case):
    assert Case.from_dict(json.loads(case.to_json())) == case


def test_same_seed_same_tensors_different_seed_different():
    a, b = materialize(BASE, "cpu"), materialize(BASE, "cpu")
    assert torch.equal(a.x, b.x) and torch.equal(a.lora_b[1], b.lora_b[1]) and torch.equal(a.out, b.out)
    c = materialize(BASE.replace(seed=2), "cpu")
    assert not torch.equal(a.x, c.x)


def test_unguarded_tensors_are_exact_size_allocations_with_the_same_data(device):
    """Fill(guards=False), what `replay --sanitize` uses: same values and strides as the guarded views, but
    each buffer its own allocation spanning exactly its elements, so compute-sanitizer sees any access
    outside it; our kernels pass on it."""
    case = BASE.replace(strided=True, num_slices=2)
    guarded, bare = materialize(case, device), materialize(case, device, Fill(guards=False))
    pairs = [
        (guarded.x, bare.x),
        (guarded.out, bare.out),
        (guarded.lora_a[1], bare.lora_a[1]),
        (guarded.align.sorted_token_ids, bare.align.sorted_token_ids),
    ]
    storages = set()
    for g, b in pairs:
        assert torch.equal(g, b) and g.stride() == b.stride()
        span = 1 + sum((n - 1) * st for n, st in zip(b.shape, b.stride(), strict=True))
        assert b.untyped_storage().nbytes() == span * b.element_size() and b.storage_offset() == 0
        storages.add(b.untyped_storage().data_ptr())
    assert len(storages) == len(pairs)
    assert check(case, "ours", device, metamorphic=True, guards=False).kind == "pass"


def test_inputs_are_signed_and_never_zero():
    t = materialize(BASE.replace(dtype="bfloat16"), "cpu")
    for v in (t.x, t.lora_a[0], t.lora_b[0], t.out):
        assert bool((v != 0).all()) and bool((v < 0).any()) and bool((v > 0).any())


def test_campaign_stream_is_deterministic_and_valid():
    for i in range(200):
        a = generate(RandomSource(i), CPU_SIZES, interpreter=True, seed=i)
        assert a == generate(RandomSource(i), CPU_SIZES, interpreter=True, seed=i)
        a.validate(interpreter=True)


def _corrupting_impl(change):
    """An implementation that runs ours, then breaks the result in one specific way."""
    from moe_lora_fuzz.fuzz.targets.impls import resolve

    ours = resolve("ours")

    def run(t):
        ours(t)
        change(t)

    return run


@pytest.mark.parametrize(
    "change,kind",
    [
        pytest.param(lambda t: t.out[0, 0, 0].add_(1), "untouched-changed", id="column-left-of-offset"),
        pytest.param(lambda t: t.out[:, :, BASE.offset].mul_(1.01), "mismatch", id="one-percent-scale"),
        pytest.param(lambda t: t.out[:, :, BASE.offset].fill_(float("nan")), "nonfinite", id="nan-in-delta"),
        pytest.param(lambda t: t.out.view(-1)[t.out.numel() + 5 :].add_(0), "pass", id="no-op"),
        pytest.param(
            lambda t: torch.as_strided(t.out, (1,), (1,), t.out.storage_offset() - 1).fill_(3.0),
            "oob-write",
            id="write-before-out",
        ),
        pytest.param(lambda t: t.x.view(-1)[:1].add_(1), "oob-write", id="input-written"),
    ],
)
def test_oracle_names_each_corruption(change, kind, device):
    case = BASE.replace(slotting="no_base", mul_routed_weight=True)
    v = check(case, "corrupt", device, impl=_corrupting_impl(change))
    assert v.kind == kind, v


def test_metamorphic_twin_sees_a_position_dependent_bug(device):
    """Wrong only when the tokens arrive in another order than the case's own (x's rows moved): no single run
    against the reference can see it, the permutation twin must."""
    case = BASE.replace(slotting="no_base", mul_routed_weight=True)
    own_order = materialize(case, "cpu").x

    def only_when_permuted(t):
        if not torch.equal(t.x.cpu(), own_order):
            t.out[:, :, BASE.offset].mul_(1.5)

    assert check(case, "corrupt", device, impl=_corrupting_impl(only_when_permuted)).kind == "pass"
    v = check(case, "corrupt", device, metamorphic=True, impl=_corrupting_impl(only_when_permuted))
    assert v.kind == "metamorphic", v


def test_minimizer_reaches_a_one_minimal_case():
    """Planted predicate: fails while m >= 3 and the dtype is bf16. Minimum: m = 3, the rest simplest."""
    start = BASE.replace(dtype="bfloat16", m=29, k_dim=97, strided=True, mul_routed_weight=True, disabled=(1,))
    res = minimize(start, lambda c: c.m >= 3 and c.dtype == "bfloat16", budget=30, interpreter=True)
    assert res.one_minimal
    assert res.case.m == 3 and res.case.dtype == "bfloat16"
    assert res.case.k_dim == 1 and not res.case.strided and not res.case.mul_routed_weight and res.case.disabled == ()
    for c in candidates(res.case):  # 1-minimal: no single further reduction still fails
        assert c == res.case or not (c.m >= 3 and c.dtype == "bfloat16")


# Stored findings whose trigger is a constant that differs between the interpreter and compiled kernels.
INTERPRETER_ONLY = {
    "align-chunk-plus-one": "the Triton align's chunk is 32 routed pairs under the interpreter and 128 "
    "compiled: this case (33 pairs) crosses only the former"
}


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_regression_corpus(path, device):
    """Replays every stored finding: ours must pass; a mutant must still fail the same way."""
    repro = load(path)
    if repro.device == "cuda" and device != "cuda":
        pytest.skip("recorded on a GPU")
    if device == "cuda" and path.stem in INTERPRETER_ONLY:
        pytest.skip(INTERPRETER_ONLY[path.stem])
    v = check(repro.case, repro.impl, device)
    if repro.impl == "ours":
        assert v.kind == "pass", v
    else:
        assert v.signature == repro.verdict.signature, v


def test_exported_test_fails_with_the_bug_and_passes_without(tmp_path, device):
    """`moe-lora-fuzz export` writes a standalone test: red while the bug is there, green once fixed."""
    import importlib.util
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "test_exported.py"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            "export",
            str(root / "tests/regressions/lora-grid-short.json"),
            "--out",
            str(out),
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    spec = importlib.util.spec_from_file_location("test_exported", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(AssertionError, match="vacuous|mismatch"):  # the short grid leaves the last slot untouched
        mod.test_exported(device)
    mod.IMPL = "ours"  # the same case against the fixed kernels
    mod.test_exported(device)


def test_regression_corpus_is_not_empty():
    assert len(REGRESSIONS) >= 8


def test_coverage_records_every_knob():
    """The knob lists of fuzz.space.coverage are derived from the dataclasses: no field (n_tiles once) is left out."""
    import dataclasses

    from moe_lora_fuzz.fuzz.space.coverage import Coverage
    from moe_lora_fuzz.kernels import TileConfig

    cov = Coverage()
    cov.add(BASE, [])
    names = [f.name for f in dataclasses.fields(Case) if f.name not in ("seed", "config")]
    names += [f"{stage}.{f.name}" for stage in ("shrink", "expand") for f in dataclasses.fields(TileConfig)]
    names += [f.name for f in dataclasses.fields(BASE.config) if f.name not in ("shrink", "expand")]
    assert [n for n in names if n not in cov.knobs] == []


def test_campaign_cases_rarely_exercise_nothing():
    """Issue 14: cases with no routed pair on an enabled slot (empty batch, all-base slotting, every token on a
    disabled slot) at most 10% of a CPU campaign's first 300 cases, yet both edges are still drawn."""
    from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, case_for
    from moe_lora_fuzz.fuzz.space.coverage import Coverage, data_features

    cov = Coverage()
    for i in range(300):
        c = case_for(CampaignConfig(device="cpu"), i)
        edges = []
        if c.m:
            h = materialize(c).host
            edges = data_features(h["topk_ids"], h["token_lora"], h["adapter_enabled"], c.num_experts, c.num_slots)
        cov.add(c, edges)
    assert cov.to_dict()["noop_share"] <= 0.10, cov.noop
    assert cov.edges["empty_batch"] and cov.knobs["slotting"].get("all_base"), cov.knobs["slotting"]
