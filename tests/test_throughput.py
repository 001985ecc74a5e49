"""Nightly throughput (issue 14): compile classes, phase timing, compiling ahead.

A GPU campaign is bound by Triton compiling kernel variants unless its cases repeat them. These tests check the
mechanism on the CPU: cases of one compile class meet exactly the kernel specialisations Triton would compile
(recorded from our kernels' launches without running them), the class stream does not depend on the seed or the
shard, phases add up, and the helpers that compile ahead are fed, replaced when they die, and never change a
verdict.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from moe_lora_fuzz.fuzz.campaign import runner
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, case_for, compile_class
from moe_lora_fuzz.fuzz.runtime import phases
from moe_lora_fuzz.fuzz.space.generate import CLASS_KNOBS, CPU_SIZES, SHIFTED, Classes, same_class

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = CampaignConfig(device="cuda", profile="nightly")


def _cases(cfg: CampaignConfig, n: int):
    return [(compile_class(cfg, i), case_for(cfg, i)) for i in range(n)]


def test_cases_of_a_class_share_every_compile_knob_and_residue():
    by_class = defaultdict(list)
    for cls, c in _cases(NIGHTLY, 400):
        if cls is not None:
            by_class[cls].append(c)
    assert len(by_class) >= 8 and max(len(v) for v in by_class.values()) > 20
    moved = 0
    for cases in by_class.values():
        first = cases[0]
        for c in cases[1:]:
            assert all(getattr(c, f) == getattr(first, f) for f in CLASS_KNOBS) and c.config == first.config
            assert all(same_class(getattr(c, f), getattr(first, f)) for f in SHIFTED)
            moved += any(getattr(c, f) != getattr(first, f) for f in SHIFTED)
    assert moved > 100  # sizes do move within a class, and M, routing, slotting are drawn afresh
    assert len({c.m for cases in by_class.values() for c in cases}) > 50


def test_class_stream_is_shared_by_seeds_and_grows_with_the_campaign():
    a = _cases(NIGHTLY, 600)
    b = _cases(dataclasses.replace(NIGHTLY, seed=7), 600)
    own = sum(cls is None for cls, _ in a)
    assert 0 < own < 12  # about 1 in 200 is a class of its own
    classes = Classes()
    assert max(cls for cls, _ in a if cls is not None) < classes.start + 600 // classes.every
    # the same class id means the same compile knobs, whatever the campaign's seed
    protos = {cls: c for cls, c in a if cls is not None}
    for cls, c in b:
        if cls in protos:
            assert c.config == protos[cls].config and c.dtype == protos[cls].dtype
    # shards see the same classes at the same indices: case i does not depend on the shard
    shard = dataclasses.replace(NIGHTLY, shard=(1, 3))
    assert [compile_class(shard, i) for i in range(1, 300, 3)] == [a[i][0] for i in range(1, 300, 3)]
    # CPU profiles are unchanged: every case a class of its own
    assert CPU_SIZES.classes is None and compile_class(CampaignConfig(device="cpu"), 5) is None


class _Recorder:
    """Stands in for a @triton.jit kernel: records the key Triton would compile for a launch (constexprs, the
    ==1 / multiple-of-16 class of every specialised int, the 16-byte alignment of every pointer) and runs
    nothing."""

    def __init__(self, name, kernel, dns, keys):
        self.name, self.kernel, self.dns, self.keys = name, kernel, set(dns), keys

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            spec = []
            for name, v in zip(self.kernel.arg_names, args, strict=False):
                if isinstance(v, torch.Tensor):
                    spec.append((str(v.dtype), v.data_ptr() % 16 == 0))
                elif isinstance(v, int) and not isinstance(v, bool) and name not in self.dns:
                    spec.append((v == 1, v % 16 == 0))
                else:
                    spec.append(None)
            self.keys.add((self.name, tuple(spec), tuple(sorted((k, str(v)) for k, v in kwargs.items()))))

        return launch


@pytest.fixture
def recorded_launches(monkeypatch):
    import moe_lora_fuzz.kernels.align as align
    import moe_lora_fuzz.kernels.moe_lora as moe_lora
    from moe_lora_fuzz.fuzz.data import counter_rng

    keys = set()
    for module, name in ((moe_lora, "moe_lora_matmul_kernel"),) + tuple(
        (align, f"align_{s}_kernel") for s in ("count", "layout", "scatter")
    ):
        kernel = getattr(module, name)
        dns = kernel.kwargs.get("do_not_specialize") or []  # the interpreter keeps @triton.jit's arguments
        monkeypatch.setattr(module, name, _Recorder(name, kernel, dns, keys))
    real = counter_rng.generate  # the signed data (tuples) does not matter here; routing, slots, flags do
    monkeypatch.setattr(counter_rng, "generate", lambda rs: real([r for r in rs if not isinstance(r, tuple)]))
    return keys


@pytest.mark.interpreter  # our kernels take CPU tensors only under the interpreter (the launches are recorded)
def test_a_class_meets_its_kernel_variants_once(recorded_launches):
    """Later cases of a class add no variant but the one their M may add (the intermediate's slice stride
    M*k*R is or is not a multiple of 16): the whole point of classes."""
    from moe_lora_fuzz.fuzz.data.tensors import materialize
    from moe_lora_fuzz.fuzz.targets.impls import resolve

    impl = resolve("ours")
    first_seen, late = {}, []
    for i in range(60):
        cls = compile_class(NIGHTLY, i)
        case = case_for(NIGHTLY, i).replace(dtype="float16")  # bf16 split-K needs atomics the interpreter lacks
        before = set(recorded_launches)
        impl(materialize(case, "cpu"))
        new = recorded_launches - before
        if cls is not None and cls in first_seen and new:
            late.append(new)
        first_seen.setdefault(cls, i)
    variants = len(recorded_launches)
    assert variants > 0
    # every late variant differs from an earlier one of its kernel only in the slice strides (M-dependent)
    names = {}
    for key in (k for new in late for k in new):
        kernel_keys = [k for k in recorded_launches if k[0] == key[0] and k[2] == key[2] and k != key]
        arg_names = _arg_names(key[0])
        closest = min(kernel_keys, key=lambda k: sum(a != b for a, b in zip(k[1], key[1], strict=True)))
        names.update({arg_names[j]: 1 for j, (a, b) in enumerate(zip(closest[1], key[1], strict=True)) if a != b})
    assert set(names) <= {"stride_xs", "stride_os"}, names


def _arg_names(kernel_name: str) -> list:
    import moe_lora_fuzz.kernels.align_kernels as ak
    import moe_lora_fuzz.kernels.moe_lora_kernels as mk

    return getattr(mk if kernel_name.startswith("moe") else ak, kernel_name).arg_names


def test_phases_nest_exclusively_and_count_jit_chains_existing_hooks(monkeypatch):
    import time

    phases.take()
    with phases.phase("outer"):
        time.sleep(0.02)
        with phases.phase("inner"):
            time.sleep(0.03)
    got = phases.take()
    assert got["outer/inner"][1] == 1 and got["outer"][1] == 1
    assert 0.02 <= got["outer"][0] < 0.03 + 0.02 and got["outer/inner"][0] >= 0.03
    assert phases.take() == {}
    # count_jit wraps Triton's hooks and calls whatever was set before
    from triton import knobs

    calls = []
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", lambda *a, **k: calls.append("before") or False)
    monkeypatch.setattr(knobs.runtime, "jit_post_compile_hook", lambda *a, **k: calls.append("after"))
    monkeypatch.setattr(phases, "_installed", False)
    phases.count_jit()
    with phases.phase("impl"):
        assert knobs.runtime.jit_cache_hook("key") is False
        knobs.runtime.jit_post_compile_hook("key")
    assert calls == ["before", "after"] and set(phases.take()) == {"impl", "impl/jit"}


def _classed_cpu(monkeypatch, **kw) -> CampaignConfig:
    """A CPU campaign whose cases come in compile classes (GPU profiles only otherwise), to drive the helpers."""
    sizes = dataclasses.replace(CPU_SIZES, classes=Classes(start=2, every=5, fresh_every=4))
    monkeypatch.setattr(runner.CampaignConfig, "sizes", property(lambda self: sizes))
    return CampaignConfig(device="cpu", quiet=True, triage_share=0, **kw)


def _feed_until(pre, done, timeout: float = 180.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        pre.feed()
        time.sleep(0.05)
    assert done(), pre.summary()


@pytest.mark.interpreter
def test_precompile_helpers_get_the_first_cases_of_each_class_ahead(monkeypatch):
    from moe_lora_fuzz.fuzz.campaign.precompile import PER_CLASS, Precompiler

    cfg = _classed_cpu(monkeypatch, impl=f"{ROOT}/tests/example_impl.py:torch_moe_lora")
    pre = Precompiler(cfg, 2, None)
    try:
        pre.at(3)
        _feed_until(pre, lambda: pre.cases >= 4)
        assert pre.restarts == 0 and max(pre.sent.values()) <= PER_CLASS
        assert all(i > 3 for i in pre.pending)  # never behind the campaign
        classes = [compile_class(cfg, i) for i in range(500)]
        first_two = {i for i, c in enumerate(classes) if c is None or classes[:i].count(c) < PER_CLASS}
        assert set(pre.pending) <= first_two
        # a minimiser's next candidates go before the stream's
        sent = pre.cases
        pre.ahead([case_for(cfg, 1000), case_for(cfg, 1001)])
        _feed_until(pre, lambda: not pre.urgent)
        assert pre.cases >= sent + 2
        # cases to explore (fuzz.campaign.variant_draw) wait in `warmed` once a helper ran them, in the order the two
        # helpers finished them (the smaller case may finish first: CI saw [b, a])
        pre.scan = False
        a, b = case_for(cfg, 2000), case_for(cfg, 2001)
        pre.explore([a, b])
        _feed_until(pre, lambda: len(pre.warmed) == 2)
        assert sorted(pre.warmed, key=lambda c: c.seed) == [a, b] and pre.restarts == 0
    finally:
        pre.close()


@pytest.mark.interpreter
def test_a_helper_that_dies_is_replaced_and_precompiling_stops_after_too_many(tmp_path, monkeypatch):
    from moe_lora_fuzz.fuzz.campaign import precompile

    impl = tmp_path / "dies.py"
    impl.write_text("import os\ndef dies(*args, **kw):\n    os._exit(3)\n")
    monkeypatch.setattr(precompile, "MAX_RESTARTS", 2)
    pre = precompile.Precompiler(_classed_cpu(monkeypatch, impl=f"{impl}:dies"), 1, None)
    try:
        pre.at(0)
        _feed_until(pre, lambda: not pre.helpers)  # died, replaced twice, then given up
        assert pre.restarts == 3 and pre.cases == 3
    finally:
        pre.close()


@pytest.mark.interpreter
def test_campaign_reports_phases_and_its_helpers(tmp_path, monkeypatch):
    cfg = _classed_cpu(monkeypatch, impl=f"{ROOT}/tests/example_impl.py:torch_moe_lora", max_cases=12, out=tmp_path)
    report = runner.run_campaign(dataclasses.replace(cfg, precompile=1))
    assert report.kinds == {"pass": 12} and report.precompile["processes"] == 1
    saved = json.loads((tmp_path / "report.json").read_text())
    spent = sum(p["s"] for p in saved["phases"].values())
    assert 0.5 * saved["elapsed_s"] < spent <= saved["elapsed_s"] * 1.05  # the phases account for the run
    assert {"startup", "generate", "oracle/impl", "oracle/references", "probe", "ipc"} <= set(saved["phases"])


def test_a_case_the_worker_never_answered_is_not_counted_as_the_pipes_time():
    """A hang, a crash or a case the budget cut leaves no phases: its wait is `unanswered`, not `ipc` (a 15 s CPU
    campaign's cut last case made `ipc` half its time)."""
    import types

    from moe_lora_fuzz.fuzz.campaign.casework import _judge_timed

    class Fake:
        def __init__(self, answer: dict):
            self.answer, self.phases = answer, None

        def judge(self, case, **kw):
            time.sleep(0.02)
            self.phases = self.answer
            return "verdict"

    report = types.SimpleNamespace(phases={})
    assert _judge_timed(Fake({"oracle": [0.005, 1]}), report, None) == "verdict"
    assert set(report.phases) == {"oracle", "ipc"} and report.phases["ipc"][0] >= 0.01
    _judge_timed(Fake({}), report, None)  # no answer
    assert report.phases["unanswered"][0] >= 0.02 and report.phases["ipc"][1] == 1


def test_minimiser_tells_ahead_each_pass_what_it_will_try():
    from moe_lora_fuzz.fuzz.space.case import Case
    from moe_lora_fuzz.fuzz.triage.minimize import AHEAD, minimize

    told, tried = [], []

    def fails(c: Case) -> bool:
        tried.append(c)
        return c.k_dim > 20  # the failure needs K > 20

    res = minimize(Case(m=9, k_dim=100, n_dim=40, rank=8), fails, ahead=told.append, interpreter=True)
    assert res.case.k_dim == 21 and len(told) > 1
    assert all(0 < len(batch) <= AHEAD for batch in told)
    assert told[0][0] == tried[0]  # the walk tries first what it announced first
    assert all(c.validate(True) for batch in told for c in batch)
