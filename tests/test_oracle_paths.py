"""Corruption tests for every path of fuzz.judgement.oracle.check: for each, an implementation broken in exactly the way
that path exists to see, and the verdict kind it must get (plus the unbroken base, which must pass).

Paths: empty batch, base-model and disabled pairs (bitwise untouched), exception, the configuration twin, the
permutation twin, the two diagnoses (oob-read, uninit-read) and reference disagreement. The broken
implementations are plain functions over a Tensors object, handed to check() through `impl=`.
"""

from __future__ import annotations

import moe_lora_fuzz.fuzz.judgement.compare as compare
import pytest
import torch
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.targets.impls import resolve

from tests.cases import BASE
from tests.example_impl import torch_moe_lora

OURS = resolve("ours")
MIXED = BASE.replace(m=9, num_slots=3, slotting="all_with_base", disabled=(1,))  # base, enabled and disabled


def _then(change, first=OURS):
    """An implementation that runs `first` (ours by default), then breaks the result with `change(t)`."""

    def run(t):
        first(t)
        change(t)

    return run


def _external(t, **overrides):
    """The hand-written adapter of tests/example_impl.py, called the way the fuzzer calls an external impl."""
    kw = t.op_kwargs()
    kw.update(overrides)
    torch_moe_lora(**kw)


def _bump_one_ulp(v: torch.Tensor) -> None:
    """The smallest change there is: the element's next representable value."""
    ints = {2: torch.int16, 4: torch.int32}[v.element_size()]
    v.view(ints).add_(1)


# ---- the base of every corruption passes ------------------------------------------------------------------
@pytest.mark.parametrize("case", [BASE.replace(m=0), MIXED], ids=["empty", "mixed"])
@pytest.mark.parametrize("impl", ["ours", "external"])
def test_unbroken_implementations_pass(case, impl, device):
    v = check(case, impl, device, metamorphic=True, impl=OURS if impl == "ours" else _external)
    assert v.kind == "pass", v


# ---- empty batch ------------------------------------------------------------------------------------------
def _write_before_out(t):
    torch.as_strided(t.out, (1,), (1,), t.out.storage_offset() - 1).fill_(3.0)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_write_before_out, id="out-guard"),
        pytest.param(lambda t: t.lora_a[0].add_(1), id="input-lora_a"),
        pytest.param(lambda t: t.adapter_enabled.zero_(), id="input-adapter_enabled"),
    ],
)
def test_empty_batch_write_is_found(change, device):
    """M = 0: nothing may change; the empty-batch shortcut still checks every byte outside the writable views."""
    v = check(BASE.replace(m=0), "corrupt", device, impl=_then(change))
    assert v.kind == "oob-write", v


# ---- base-model and disabled pairs ------------------------------------------------------------------------
def _pair_with(t, want: str) -> int:
    lanes = t.token_lora.tolist()
    enabled = t.adapter_enabled.tolist()
    kinds = ["base" if s < 0 else ("disabled" if not enabled[s] else "active") for s in lanes]
    assert want in kinds, (want, lanes)
    return kinds.index(want)


@pytest.mark.parametrize("which", ["base", "disabled"])
@pytest.mark.parametrize("how", ["plus-one", "one-ulp"])
def test_write_into_an_inactive_pair_is_untouched_changed(which, how, device):
    """A delta column of a base-model or disabled pair must stay bitwise as it was: even one ulp is a finding."""

    def change(t):
        m = _pair_with(t, which)
        elem = t.out[m, 1, MIXED.offset : MIXED.offset + 1]
        elem.add_(1) if how == "plus-one" else _bump_one_ulp(elem)

    v = check(MIXED, "corrupt", device, impl=_then(change))
    assert v.kind == "untouched-changed", v


def test_write_into_an_active_pair_within_the_bound_passes(device):
    """The contrast to the test above: the same one-ulp change on an active pair is within the bound."""

    def change(t):
        _bump_one_ulp(t.out[_pair_with(t, "active"), 1, MIXED.offset : MIXED.offset + 1])

    assert check(MIXED, "corrupt", device, impl=_then(change)).kind == "pass"


# ---- exception ----------------------------------------------------------------------------------------
def test_raising_implementation_is_an_exception_finding(device):
    def boom(t):
        raise RuntimeError("kernel launch failed")

    v = check(MIXED, "corrupt", device, impl=boom)
    assert v.kind == "exception" and "RuntimeError: kernel launch failed" in v.message, v
    assert v.failure == "RuntimeError@tests/test_oracle_paths.py:boom"  # exception type + the raising frame
    assert v.signature == f"exception|{v.failure}|corrupt|{MIXED.coarse_class}" and v.failed


def test_write_between_guarded_buffers_is_an_oob_write(device):
    """A stray byte in the alignment gap after a buffer's guard (in no buffer at all) is still found."""

    def gap_write(t):
        OURS(t)
        for g in t.guarded:
            end = g.offset + g.base.numel() * g.base.element_size()
            if end % 256:  # bases start 256-byte aligned: the bytes up to the next one belong to no buffer
                t.arena[end] += 1
                return
        raise AssertionError("no gap between guarded buffers")

    v = check(MIXED, "corrupt", device, impl=gap_write)
    assert v.kind == "oob-write" and "between the guarded buffers" in v.message, v


# ---- the configuration twin ---------------------------------------------------------------------------
def _config_dependent(case):
    """Ours, but wrong (far beyond the bound) whenever it runs with a configuration other than the case's."""

    def run(t):
        OURS(t)
        if t.case.config != case.config:
            t.out[:, :, case.offset].add_(0.5)

    return run


@pytest.mark.parametrize("block_m", [16, 32])
def test_configuration_twin_sees_a_config_dependent_result(block_m, device):
    """From either block size (the twin flips BLOCK_M 16 <-> other), the twin must run and disagree."""
    case = MIXED.replace(
        slotting="no_base",
        disabled=(),
        config=MIXED.config.__class__(block_m=block_m, shrink=MIXED.config.shrink, expand=MIXED.config.expand),
    )
    impl = _config_dependent(case)
    assert check(case, "ours", device, impl=impl).kind == "pass"  # no single run can see it
    v = check(case, "ours", device, metamorphic=True, impl=impl)
    assert v.kind == "metamorphic" and "configuration" in v.message, v
    assert v.to_dict()["kind"] == "metamorphic" and v.to_dict()["message"] == v.message


def test_configuration_twin_allows_differences_within_the_bound(device):
    """Two configurations of a correct kernel round differently; one ulp apart is no finding."""
    case = MIXED.replace(slotting="no_base", disabled=())

    def run(t):
        OURS(t)
        if t.case.config != case.config:
            _bump_one_ulp(t.out[0, 0, case.offset : case.offset + 1])

    assert check(case, "ours", device, metamorphic=True, impl=run).kind == "pass"


# ---- the permutation twin -----------------------------------------------------------------------------
def _stale_routing_weights():
    """An external implementation that caches topk_weights from its first call (a stale-cache bug): right on
    the first batch, wrong once the same tokens arrive in another order."""
    cache = {}

    def run(t):
        _external(t, topk_weights=cache.setdefault("w", t.topk_weights.clone()))

    return run


def test_permutation_twin_sees_token_order_dependence(device):
    case = MIXED.replace(slotting="no_base", disabled=(), mul_routed_weight=True)
    assert check(case, "stale", device, impl=_stale_routing_weights()).kind == "pass"
    v = check(case, "stale", device, metamorphic=True, impl=_stale_routing_weights())
    assert v.kind == "metamorphic" and "permut" in v.message, v


# ---- diagnosis ----------------------------------------------------------------------------------------
def _reads_one_row_late(t):
    """Every token reads the next token's row of x: the last token reads the row after x ends (the guard)."""
    x = t.x
    shifted = torch.as_strided(x, x.shape, x.stride(), x.storage_offset() + x.stride(0))
    _external(t, x=shifted)


def _shrink_into_unzeroed_workspace(t):
    """Shrink accumulates into the workspace intermediate without zeroing it first (splitk-unzeroed, in torch)."""
    k, offset = t.case.top_k, t.case.offset
    lanes, enabled, ids = t.token_lora.tolist(), t.adapter_enabled.tolist(), t.topk_ids.tolist()
    n_dim = t.lora_b[0].shape[2]
    for f in range(t.topk_ids.numel()):
        m, j = divmod(f, k)
        if lanes[m] < 0 or not enabled[lanes[m]]:
            continue
        lane, e = lanes[m], ids[m][j]
        row = (t.x[f] if t.case.layout == "per_routed" else t.x[m]).float()
        for s in range(len(t.lora_a)):
            t.intermediate[s, f] += t.lora_a[s][lane, e].float() @ row  # += onto whatever was there
            d = t.lora_b[s][lane, e].float() @ t.intermediate[s, f]
            if t.case.mul_routed_weight:
                d = d * float(t.topk_weights[m, j])
            cols = slice(offset + s * n_dim, offset + (s + 1) * n_dim)
            t.out[m, j, cols] = (t.out[m, j, cols].float() + d).to(t.out.dtype)


@pytest.mark.parametrize(
    "impl, kind",
    [
        pytest.param(_reads_one_row_late, "oob-read", id="oob-read"),
        pytest.param(_shrink_into_unzeroed_workspace, "uninit-read", id="uninit-read"),
    ],
)
def test_diagnosis_names_the_read(impl, kind, device):
    case = MIXED.replace(slotting="no_base", disabled=())
    v = check(case, "corrupt", device, impl=impl)
    assert v.kind == kind, v


def test_wrong_but_in_bounds_result_stays_a_mismatch(device):
    """The diagnosis reruns must not rename a plain wrong answer: a scale error reads nothing it should not,
    so it stays a mismatch."""
    case = MIXED.replace(slotting="no_base", disabled=())
    v = check(case, "corrupt", device, impl=_then(lambda t: t.out[:, :, case.offset].mul_(1.5)))
    assert v.kind == "mismatch", v


# ---- reference disagreement ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["moe_lora_naive", "moe_lora_fp64"])
def test_reference_disagreement_is_reported_before_running_the_impl(which, monkeypatch, device):
    """A reference off by one part in a million (far above fp64 roundoff) is a finding of its own kind,
    reported before the implementation runs."""
    real = getattr(compare, which)  # the references are called where the run is compared

    def off(*args, **kw):
        r = real(*args, **kw)
        if which == "moe_lora_naive":
            return r * (1 + 1e-6)
        return type(r)(r.delta * (1 + 1e-6), r.active, r.mag_full, r.mag_mid)

    monkeypatch.setattr(compare, which, off)
    ran = []
    # cross_check=True: up front on a GPU too, where it is sampled (tests/test_cross_check.py has the rule)
    v = check(MIXED, "ours", device, impl=lambda t: ran.append(1) or OURS(t), cross_check=True)
    assert v.kind == "reference-disagreement", v
    assert not ran
