"""Kernel variants (docs/variants.md): the specialisation key of a Triton launch (fuzz.runtime.variants), the
model that learns which cases compile what (fuzz.space.variant_model), variant-aware drawing and its compile-ahead
schedule (fuzz.campaign.variant_draw, fuzz.campaign.precompile), and the minimiser's variant order."""

from __future__ import annotations

import os
import random
import time
from collections import Counter, deque

import pytest
import torch
import triton.language as tl
from moe_lora_fuzz.fuzz.campaign import variant_draw
from moe_lora_fuzz.fuzz.campaign.precompile import Precompiler, default_processes
from moe_lora_fuzz.fuzz.campaign.variant_draw import NEW_VARIANT_SHARE, STREAM_FIRST, VariantDraw, enabled
from moe_lora_fuzz.fuzz.execution.worker import PRELUDE_CASES, CampaignConfig, case_for, runs_twin
from moe_lora_fuzz.fuzz.runtime import variants
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.variant_model import VariantModel, features
from moe_lora_fuzz.fuzz.triage.minimize import minimize
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction


def _add_one(x_ptr, n, stride, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs * stride, tl.load(x_ptr + offs * stride, mask=mask) + 1, mask=mask)


def _kernels(**kw):
    return JITFunction(_add_one, **kw), InterpretedFunction(_add_one, **kw)


# ---- the key -------------------------------------------------------------------------------------------
def test_key_is_the_same_compiled_and_interpreted():
    x = torch.zeros(64)
    for kw in ({}, {"do_not_specialize": ["n"]}):
        jit, interp = _kernels(**kw)
        for args in ((x, 17, 1), (x, 16, 2), (x[1:], 1, 1)):
            assert variants.key_of(jit, args, {"BLOCK": 32}) == variants.key_of(interp, args, {"BLOCK": 32})


@pytest.mark.parametrize(
    "args, kwargs, why",
    [
        ((torch.zeros(64), 17, 1), {"BLOCK": 64}, "a constexpr"),
        ((torch.zeros(64), 16, 1), {"BLOCK": 32}, "an int becomes a multiple of 16"),
        ((torch.zeros(64), 1, 1), {"BLOCK": 32}, "an int becomes 1"),
        ((torch.zeros(64), 17, 2), {"BLOCK": 32}, "another int becomes non-1"),
        ((torch.zeros(65)[1:], 17, 1), {"BLOCK": 32}, "a pointer loses 16-byte alignment"),
        ((torch.zeros(64, dtype=torch.float16), 17, 1), {"BLOCK": 32}, "a pointer's dtype"),
        ((torch.zeros(64), 2**40 + 1, 1), {"BLOCK": 32}, "an int needs 64 bits"),
        ((torch.zeros(64), 17, 1), {"BLOCK": 32, "num_warps": 8}, "a launch option"),
    ],
)
def test_key_changes_with_a_specialisation(args, kwargs, why):
    jit, _ = _kernels()
    base = variants.key_of(jit, (torch.zeros(64), 17, 1), {"BLOCK": 32})
    assert variants.key_of(jit, args, kwargs) != base, why


def test_key_does_not_change_with_data_or_unspecialised_values():
    jit, _ = _kernels()
    base = variants.key_of(jit, (torch.zeros(64), 17, 2), {"BLOCK": 32})
    assert variants.key_of(jit, (torch.randn(64), 17, 2), {"BLOCK": 32}) == base  # other data
    assert variants.key_of(jit, (torch.zeros(128), 33, 3), {"BLOCK": 32}) == base  # other sizes, same class
    unspecialised, _ = _kernels(do_not_specialize=["n"])
    a = variants.key_of(unspecialised, (torch.zeros(64), 16, 1), {"BLOCK": 32})
    assert variants.key_of(unspecialised, (torch.zeros(64), 1, 1), {"BLOCK": 32}) == a  # n is not specialised


def test_launches_are_observed_under_the_interpreter():
    variants.install()
    _, interp = _kernels()
    x = torch.zeros(64)
    variants.take()
    interp[(1,)](x, 17, 1, BLOCK=32)
    interp[(1,)](x, 18, 1, BLOCK=32)  # the same variant: one key
    interp[(1,)](x, 16, 1, BLOCK=32)
    seen = variants.take()
    assert x[:16].eq(3).all() and x[16:19].tolist() == [2, 1, 0]  # the launches ran, unchanged by observing
    assert seen["keys"] == [
        variants.key_of(interp, (x, 17, 1), {"BLOCK": 32}),
        variants.key_of(interp, (x, 16, 1), {"BLOCK": 32}),
    ]
    assert variants.take()["keys"] == []


def test_helpers_stay_off_the_campaigns_cpus(monkeypatch):
    from moe_lora_fuzz.fuzz.runtime import cpus

    monkeypatch.delenv("MOE_LORA_FUZZ_PIN_HELPERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cpus, "_siblings", lambda cpu: set())  # no topology: one thread per core
    assert cpus.helper_cpus() == frozenset(range(4, 16))
    monkeypatch.setattr(cpus, "_siblings", lambda cpu: {cpu % 8, cpu % 8 + 8})  # cores of two threads
    assert cpus.helper_cpus() == frozenset(range(16)) - {0, 8, 1, 9}  # two whole cores kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert cpus.helper_cpus() is None  # nothing left for helpers: not pinned
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert cpus.worker_cpus() is None  # the worker is pinned only on request (a measurement knob)
    monkeypatch.setenv("MOE_LORA_FUZZ_PIN_WORKER", "1")
    assert cpus.worker_cpus() == frozenset({0, 8, 1, 9})  # what the helpers leave: whole cores
    monkeypatch.setenv("MOE_LORA_FUZZ_PIN_HELPERS", "0")
    assert cpus.helper_cpus() is None and cpus.worker_cpus() is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_helper_process_runs_on_the_cpus_it_was_given(tmp_path):
    """A real helper process: its implementation, imported inside it, sees the affinity it was started with."""
    from moe_lora_fuzz.fuzz.campaign.precompile import _Helper

    seen = tmp_path / "cpus.txt"
    (tmp_path / "probe_impl.py").write_text(
        f"import os\nopen({str(seen)!r}, 'w').write(repr(sorted(os.sched_getaffinity(0))))\n"
        "def run(*a, **k):\n    pass\n"
    )
    cpu = min(os.sched_getaffinity(0))
    h = _Helper("cpu", f"{tmp_path / 'probe_impl.py'}:run", frozenset({cpu}))
    try:
        end = time.monotonic() + 120
        while not h.ready and time.monotonic() < end and h.poll(deque()):
            time.sleep(0.05)
        assert h.ready, "the helper did not start"
        assert seen.read_text() == repr([cpu])
    finally:
        h.kill()


def test_a_gpu_worker_runs_torch_on_one_host_thread(monkeypatch, tmp_path):
    """Busy neighbours kept a worker's OpenMP threads off CPUs and its GPU-waiting phases took 6 to 9 times as
    long (issue 29): a GPU worker uses GPU_WORKER_THREADS, or the knob's; the CPU interpreter keeps torch's."""
    from moe_lora_fuzz.fuzz.execution import worker
    from moe_lora_fuzz.fuzz.runtime import cpus

    monkeypatch.delenv("MOE_LORA_FUZZ_WORKER_THREADS", raising=False)
    assert cpus.worker_threads("cuda") == cpus.GPU_WORKER_THREADS == 1 and cpus.worker_threads("cpu") is None
    monkeypatch.setenv("MOE_LORA_FUZZ_WORKER_THREADS", "0")
    assert cpus.worker_threads("cuda") is None  # torch's default
    monkeypatch.setenv("MOE_LORA_FUZZ_WORKER_THREADS", "3")
    assert cpus.worker_threads("cuda") == 3
    monkeypatch.setenv("MOE_LORA_FUZZ_WORKER_THREADS", "many")
    with pytest.raises(ValueError, match="MOE_LORA_FUZZ_WORKER_THREADS must be a whole number"):
        cpus.worker_threads("cuda")
    # a real worker process (on the CPU here) given the GPU's rule: its implementation sees the threads
    seen = tmp_path / "threads.txt"
    (tmp_path / "probe_impl.py").write_text(
        f"import torch\nopen({str(seen)!r}, 'w').write(str(torch.get_num_threads()))\ndef run(*a, **k):\n    pass\n"
    )
    want = 2 if torch.get_num_threads() == 1 else 1  # not what the process would have anyway
    monkeypatch.setattr(worker, "worker_threads", lambda device: want)
    w = worker.Worker("cpu", f"{tmp_path / 'probe_impl.py'}:run")
    try:
        assert seen.read_text() == str(want)
    finally:
        w.kill()


def test_a_helper_compiles_implementation_kernels_without_launching_them(monkeypatch):
    calls = []
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, grid, warmup, **kw: calls.append((self.name, warmup)))
    monkeypatch.delenv("MOE_LORA_FUZZ_HELPERS_LAUNCH", raising=False)
    variants.compile_only()
    variants.compile_only()  # idempotent: one wrapper
    impl, harness = type("K", (), {"name": "impl"})(), type("K", (), {"name": "gen", "harness": True})()
    JITFunction.run(impl, 1, grid=(1,), warmup=False)
    JITFunction.run(harness, 1, grid=(1,), warmup=False)
    JITFunction.run(harness, 1, grid=(1,), warmup=True)
    assert calls == [("impl", True), ("gen", False), ("gen", True)]  # Triton's warm-up path: compiled, not run


# ---- the model and the draw ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _refits_on_count_alone(monkeypatch):
    """The model skips refits that took more than a share of its lifetime: on a loaded machine that made these
    simulations depend on timing. Here refits follow the observation count alone."""
    from moe_lora_fuzz.fuzz.space import variant_model

    monkeypatch.setattr(variant_model, "FIT_TIME_SHARE", float("inf"))


def _fake_variant(case: Case, wide: bool = True) -> list[str]:
    """What a wrapper might compile: per dtype and top_k, K exactly (a constexpr), N's divisibility."""
    k = case.k_dim if wide else case.k_dim % 16 == 0
    return [f"shrink#{case.dtype}|{case.top_k}|{k}", f"expand#{case.dtype}|{case.n_dim % 16 == 0}"]


def test_model_predicts_what_it_has_seen_and_not_a_new_value():
    m = VariantModel()
    rng = random.Random(0)
    for _ in range(200):
        c = Case(dtype=rng.choice(["float16", "bfloat16"]), m=rng.randint(1, 40), k_dim=rng.choice([16, 32, 17]))
        m.observe(c, features(c), _fake_variant(c, wide=False))
    m.fit()
    seen = Case(dtype="float16", m=7, k_dim=32)
    assert m.predict(features(seen)) == frozenset(_fake_variant(seen, wide=False))
    assert m.predict(features(Case(dtype="float32", k_dim=32))) is None  # a dtype never seen
    assert not {f for f in m.deciding() if f.startswith(("m~", "m==", "m%"))}, "M decides nothing here"


def _simulate(on: bool, n: int = 260, pool=None, **cfg_kw):
    cfg = CampaignConfig(impl="ours", device="cpu", seed=3, **cfg_kw)
    vd = VariantDraw(cfg, None, on=on, started=0.0)
    vd.pool = pool
    seen, opened, chosen, probes = set(), [], [], []
    for i in range(n):
        case = vd.case(i)
        vd.explore_ahead()  # the worker's on_sent, while it judges the case
        twin = runs_twin(cfg, case)  # the twin runs another configuration: variants of its own
        keys = _fake_variant(case) + ([f"twin#{case.dtype}|{case.top_k}"] if twin else [])
        opened.append(bool(set(keys) - seen))
        probes.append(vd.clones.get(case, "not a clone"))
        seen |= set(keys)
        vd.observe(case, {"metamorphic": twin}, {"keys": keys})
        vd.after_case()
        chosen.append(case)
        if pool is not None:
            pool.step()
    vd.probes = probes
    return vd, opened, chosen, seen


def test_drawing_keeps_the_stated_share_of_new_variants():
    vd, opened, chosen, seen = _simulate(on=True)
    off_vd, off_opened, off_chosen, off_seen = _simulate(on=False)
    decided = sum(vd.counts[k] for k in ("explore", "cloned", "exploit", "no_candidate_new", "no_candidate_known"))
    explored = vd.counts["explore"] + vd.counts["no_candidate_new"]
    assert vd.counts["stream_first"] == STREAM_FIRST and decided == 260 - PRELUDE_CASES - STREAM_FIRST
    stream_end = PRELUDE_CASES + STREAM_FIRST  # the campaign's own stream until then, while the model learns
    assert chosen[:stream_end] == [case_for(vd.cfg, i) for i in range(stream_end)]
    assert abs(explored / decided - NEW_VARIANT_SHARE) < 0.07, vd.counts  # binomial: 3 standard deviations
    late, off_late = sum(opened[100:]), sum(off_opened[100:])
    assert late <= (NEW_VARIANT_SHARE + 0.05) * 160, (late, vd.counts)  # the rest stays in compiled variants
    assert off_late > 2 * late, (off_late, late)  # drawing as before opens many more
    assert len(
        {frozenset(_fake_variant(c)) for c in chosen[100:]} - {frozenset(_fake_variant(c)) for c in chosen[:100]}
    )
    assert len(seen) > 40  # variant coverage still grows
    assert off_chosen == [case_for(off_vd.cfg, i) for i in range(260)]  # off: exactly the old stream
    assert chosen[:PRELUDE_CASES] == off_chosen[:PRELUDE_CASES]  # the edge prelude stays


def test_a_predictor_that_is_right_draws_fresh_shapes_instead_of_clones():
    cfg = CampaignConfig(impl="ours", device="cpu", seed=5)
    vd = VariantDraw(cfg, None, on=True, started=0.0)
    seen, opened, chosen = set(), [], []
    for i in range(300):  # a kernel that specialises on the dtype alone: easy to predict
        case = vd.case(i)
        chosen.append(case)
        keys = [f"k#{case.dtype}"]
        opened.append(bool(set(keys) - seen))
        seen |= set(keys)
        vd.observe(case, {}, {"keys": keys})
        vd.after_case()
    assert vd.model.trusted() and vd.counts["exploit"] > vd.counts["cloned"], vd.counts
    assert not any(opened[50:])
    shapes = {(c.m, c.k_dim, c.n_dim) for c in chosen[250:]}
    assert len(shapes) > 25  # fresh draws, not copies of a few observed cases


def test_the_share_is_a_setting():
    vd, *_ = _simulate(on=True, n=200, new_variant_share=0.5)
    decided = sum(vd.counts[k] for k in ("explore", "cloned", "exploit", "no_candidate_new", "no_candidate_known"))
    assert abs((vd.counts["explore"] + vd.counts["no_candidate_new"]) / decided - 0.5) < 0.11
    assert vd.summary(interpreter=True)["new_variant_share"] == 0.5


def test_clones_stay_in_their_variant_and_what_breaks_it_is_learned():
    vd, opened, chosen, _ = _simulate(on=True, n=400)
    plain = [o for o, p in zip(opened, vd.probes, strict=True) if p is None]  # only free knobs redrawn
    assert len(plain) > 150 and not any(plain)
    probed = [(p, o) for o, p in zip(opened, vd.probes, strict=True) if p not in (None, "not a clone")]
    assert probed and all(not o for p, o in probed if p not in ("dtype", "top_k", "k_dim", "n_dim"))
    free = vd.model.free
    assert "seed" in free.free and not ({"dtype", "top_k", "k_dim"} & free.free)
    assert {p for p, o in probed if o} <= {n for n in free.names if free.bad[n]}  # each failure is remembered


class _FakePool:
    """Helpers that run each explored case `lag` campaign cases after it was queued."""

    def __init__(self, helpers: int = 3, lag: int = 4):
        self.helpers, self.lag = [None] * helpers, lag
        self.queued, self.warmed, self.sent = [], deque(), []

    def explore(self, cases):
        self.queued += [[self.lag, c] for c in cases]
        self.sent += cases

    def exploring_count(self):
        return len(self.queued) + len(self.warmed)

    def step(self):
        for q in self.queued:
            q[0] -= 1
        self.warmed.extend(c for t, c in self.queued if t <= 0)
        self.queued = [q for q in self.queued if q[0] > 0]


def test_explored_cases_are_only_those_the_helpers_already_ran():
    pool = _FakePool()
    vd, opened, chosen, seen = _simulate(on=True, n=300, pool=pool)
    sent = set(pool.sent)
    warmed_taken = [c for c in chosen if c in sent]
    assert vd.counts["explore"] + vd.counts["warmed_instead_of_clone"] == len(warmed_taken), vd.counts
    assert vd.counts["explore"] > 20, vd.counts
    assert vd.counts["no_candidate_new"] == 0  # with helpers the worker never explores on its own
    assert vd.counts["explore_waiting"] > 0  # the first explore slots found nothing compiled yet
    # after the first cases the worker opens new variants on the cases the helpers ran; elsewhere only where a trusted
    # predictor is wrong (a few in a hundred) or a clone tries a knob on probation
    late = [p for c, o, p in zip(chosen[60:], opened[60:], vd.probes[60:], strict=True) if o and c not in sent]
    assert len([p for p in late if p in (None, "not a clone")]) <= 0.05 * 240, (late, vd.counts)
    assert sum(o for c, o in zip(chosen[60:], opened[60:], strict=True) if c in sent) > 2 * len(late)
    assert sum(opened[100:]) and len(seen) > 40  # coverage still grows


def test_explore_ahead_keeps_the_queue_full_with_distinct_projections():
    pool = _FakePool(helpers=4, lag=10**6)  # nothing ever finishes
    cfg = CampaignConfig(impl="ours", device="cpu", seed=3)
    vd = VariantDraw(cfg, None, on=True, started=0.0)
    vd.pool = pool
    for i in range(200):  # observe some cases so that predictions exist
        case = case_for(cfg, i)
        vd.observe(case, {}, {"keys": _fake_variant(case)})
    vd.model.fit()
    for i in range(200, 260):
        vd.case(i)
        vd.explore_ahead()
    assert 2 <= pool.exploring_count() <= 2 * 4  # EXPLORE_PER_HELPER per helper, never more
    projections = [vd.exploring[c] for c in pool.sent]
    assert len(set(projections)) == len(projections)  # two of one projection would compile one variant twice
    assert all(vd.predict(c) is None for c in pool.sent)


class _FakeHelper:
    def __init__(self, finishes: bool = True):
        self.ready, self.busy_since, self.sent, self.explored, self.finishes = True, None, [], None, finishes
        self.compiled = Counter()

    def poll(self, done):
        if self.finishes and self.busy_since is not None:
            self.compiled["compiled"] += 1  # as a real helper counts its answers' Triton events
            done.extend([self.explored] if self.explored is not None else [])
            self.explored, self.busy_since = None, None
        return True

    def send(self, case, twins=True, explored=False):
        self.sent.append(case)
        self.busy_since, self.explored = time.monotonic(), case if explored else None

    def kill(self):
        pass


def test_precompiler_runs_explored_cases_after_triages_and_keeps_them_warmed():
    cfg = CampaignConfig(impl="ours", device="cpu", seed=0)
    pre = Precompiler(cfg, 0, None)
    pre.helpers, pre.scan = [_FakeHelper()], False
    a, b, t = Case(m=3), Case(m=4), Case(m=7)
    pre.explore([a, b])  # a goes out at once
    pre.ahead([t])  # triage's candidate before b
    pre.feed()  # a done: t goes
    pre.feed()  # t done (not an explored case): b goes
    pre.feed()
    assert pre.helpers[0].sent == [a, t, b]
    assert list(pre.warmed) == [a, b] and pre.exploring_count() == 2
    assert pre.cases == 3
    assert pre.summary()["compiled"] == 3  # the Triton events of the three answers the helper gave


def test_a_helper_counts_the_compilations_its_answers_report():
    from moe_lora_fuzz.fuzz.campaign.precompile import _Helper

    class Pipe:
        def __init__(self, msgs):
            self.msgs = list(msgs)

        def poll(self):
            return bool(self.msgs)

        def recv(self):
            return self.msgs.pop(0)

    h = _Helper.__new__(_Helper)  # its process stood in for: only what poll reads
    h.ready, h.busy_since, h.explored, h.compiled = True, 1.0, None, Counter()
    h.proc = type("Alive", (), {"is_alive": lambda self: True})()
    h.conn = Pipe([{"verdict": None, "variants": {"compiled": 2, "loaded": 5}}, {"verdict": None, "variants": {}}])
    assert h.poll(deque()) and h.busy_since is None
    assert h.compiled == Counter(compiled=2, loaded=5)


def test_helpers_start_few_and_join_only_while_the_campaign_waits_on_them(monkeypatch):
    from moe_lora_fuzz.fuzz.campaign import precompile

    started = []
    monkeypatch.setattr(
        precompile,
        "_Helper",
        lambda device, impl, cpus=None: started.append(_FakeHelper(finishes=False)) or started[-1],
    )
    monkeypatch.setattr(precompile, "GROW_EVERY_S", 0.0)
    pre = Precompiler(CampaignConfig(impl="ours", device="cpu", seed=0), 4, None)
    pre.scan = False
    assert len(pre.helpers) == precompile.START_HELPERS == 2
    pre.feed()  # nothing waits: nobody joins
    assert len(pre.helpers) == 2
    pre.explore([Case(m=3), Case(m=4), Case(m=5)])  # two go out, the third waits with every helper busy
    assert len(pre.helpers) == 3 and [len(h.sent) for h in pre.helpers] == [1, 1, 0]
    pre.feed()  # the newcomer takes it; nothing waits
    assert len(pre.helpers) == 3
    pre.pending.extend([1000, 1001])  # class cases far ahead of the campaign (at 0) wait: not behind yet
    pre.feed()
    assert len(pre.helpers) == 3
    pre.at(1000 - precompile.BEHIND)  # now the campaign is close: one joins at a time, up to the limit
    pre.feed()
    pre.feed()
    assert len(pre.helpers) == 4 and pre.summary()["limit"] == 4
    monkeypatch.setattr(precompile, "GROW_EVERY_S", 3600.0)  # and never faster than GROW_EVERY_S
    pre.limit = 5
    pre.feed()
    assert len(pre.helpers) == 4


def test_an_explored_case_that_kills_its_helper_is_the_campaigns():
    cfg = CampaignConfig(impl="ours", device="cpu", seed=0)
    pre = Precompiler(cfg, 0, None)
    dying = _FakeHelper(finishes=False)
    dying.poll = lambda done: False  # the process is gone
    pre.helpers, pre.scan = [dying], False
    a = Case(m=3)
    dying.explored = a
    pre.restarts = 10**6  # no replacement helper
    pre.feed()
    assert list(pre.warmed) == [a]  # the worker judges it (and finds the crash)


def test_on_the_cpu_nothing_compiles_ahead_and_drawing_is_off_by_default():
    assert default_processes("cpu") == 0
    assert not enabled("auto", "cpu") and enabled("auto", "cuda") and enabled("on", "cpu")
    assert not enabled("off", "cuda")
    assert not enabled("auto", "cuda", ours=True) and enabled("on", "cuda", ours=True)  # ours: its compile classes


def test_helpers_share_the_host_with_shards_and_xdist_workers(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert default_processes("cuda") == 12 and default_processes("cuda", shards_here=3) == 4
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "12")  # twelve test processes, each with its campaigns
    assert default_processes("cuda") == 1
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert default_processes("cuda", shards_here=3) == 2


# ---- triage's order -------------------------------------------------------------------------------------
def test_minimiser_tries_the_observed_variant_first_and_ends_where_it_did():
    start = Case(m=40, k_dim=48, n_dim=33, top_k=3, num_experts=4)
    tried: list = []

    def fails(c):
        tried.append(c)
        return c.k_dim >= 32  # the bug needs a large K

    plain = minimize(start, fails, interpreter=True)
    plain_tried = list(tried)
    tried.clear()

    def order(current, cands):  # "k_dim decides the variant": candidates that keep it first
        return sorted(cands, key=lambda c: c.k_dim != current.k_dim)

    ordered = minimize(start, fails, interpreter=True, order=order)
    assert ordered.case == plain.case and ordered.one_minimal  # the same 1-minimal result
    assert tried != plain_tried and tried[0].k_dim == start.k_dim
    first_change = next(i for i, c in enumerate(tried) if c.k_dim != start.k_dim)
    assert first_change > 0 and all(c.k_dim == tried[0].k_dim for c in tried[:first_change])


def test_variant_order_ranks_by_the_learned_model():
    cfg = CampaignConfig(impl="ours", device="cpu", seed=0)
    vd = VariantDraw(cfg, None, on=True, started=0.0)
    for c in [Case(dtype="float16", k_dim=k, m=m) for k in (16, 17) for m in (1, 2, 3, 5, 8)]:
        vd.observe(c, {}, {"keys": _fake_variant(c, wide=False)})  # campaign runs
    vd.model.fit()
    current = Case(dtype="float16", k_dim=16, m=5)
    vd.observe(current, {"quick": True}, {"keys": _fake_variant(current, wide=False)})  # a triage run
    same, other, new = Case(dtype="float16", k_dim=16, m=2), Case(dtype="float16", k_dim=17, m=2), Case(dtype="float32")
    assert vd.order(current, [new, other, same]) == [same, other, new]


@pytest.mark.interpreter  # CPU tensors: the interpreter's (GPU runs skip it)
def test_variants_are_reported_by_a_cpu_campaign(tmp_path):
    from moe_lora_fuzz.fuzz.campaign.runner import run_campaign

    cfg = CampaignConfig(impl="ours", device="cpu", budget=120, max_cases=6, out=tmp_path, quiet=True)
    report = run_campaign(cfg)
    v = report.to_dict()["variants"]
    assert v["draw"] == "off" and v["distinct"] > 0
    assert v["first_minute"]["cases"] + v["after_first_minute"]["cases"] == report.cases
    assert sum(v["kernels"].values()) == v["distinct"]
    assert variant_draw.FIRST_MINUTE_S == 60.0


def test_a_helper_runs_the_implementation_on_the_case_and_its_twin_and_judges_nothing(monkeypatch):
    from moe_lora_fuzz.fuzz.judgement import compare, oracle
    from moe_lora_fuzz.fuzz.targets.impls import Impl

    def no_reference(*a, **k):
        raise AssertionError("a helper computes no reference")

    monkeypatch.setattr(compare, "moe_lora_fp64", no_reference)
    monkeypatch.setattr(compare, "moe_lora_naive", no_reference)
    seen = []
    impl = Impl("counting", run=lambda t: seen.append(t.case.config), takes_config=True)
    case = Case(m=5, k_dim=32, n_dim=16)
    oracle.compile_ahead(case, "counting", "cpu", metamorphic=True, impl=impl)
    assert seen == [case.config, oracle._twin_cases(case)[0].config]  # what the worker will launch, twin included
    seen.clear()
    oracle.compile_ahead(case, "counting", "cpu", metamorphic=False, impl=impl)
    assert seen == [case.config]


def test_a_helper_builds_its_cases_where_moe_lora_fuzz_helpers_build_says(monkeypatch):
    from moe_lora_fuzz.fuzz.execution import worker
    from moe_lora_fuzz.fuzz.targets.impls import Impl

    impl = Impl("counting", run=lambda t: None, takes_config=True)
    msg = {"mode": "compile", "metamorphic": False}
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_BUILD", "host")
    assert worker._judge_here(msg, Case(m=5, k_dim=32, n_dim=16), impl, "counting", "cpu").kind == "pass"
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_BUILD", "gpu")  # reaches materialize, which names the rule
    with pytest.raises(ValueError, match="where must be 'auto', 'host' or 'device'"):
        worker._judge_here(msg, Case(m=5, k_dim=32, n_dim=16), impl, "counting", "cpu")


def test_the_worker_calls_on_sent_once_per_case_while_it_judges():
    from pathlib import Path

    from moe_lora_fuzz.fuzz.execution.worker import Worker

    impl = f"{Path(__file__).resolve().parent / 'example_impl.py'}:torch_moe_lora"
    w = Worker("cpu", impl)
    calls = []
    w.on_sent = lambda: calls.append(w._proc.is_alive())
    try:
        verdicts = [w.judge(Case(seed=s, m=2, k_dim=8, n_dim=8), timeout=120) for s in (1, 2)]
    finally:
        w.close()
    assert [v.kind for v in verdicts] == ["pass", "pass"] and calls == [True, True]


@pytest.mark.interpreter  # CPU tensors: the interpreter's (GPU runs skip it)
def test_the_harness_own_kernels_are_not_counted_as_variants():
    """The fused generator (fuzz.data.fused_gen) launches a Triton kernel on every GPU case: the harness's, not the
    implementation's, so it is no variant of the implementation (launched here through the interpreter)."""
    from moe_lora_fuzz.fuzz.data import fused_gen
    from moe_lora_fuzz.fuzz.data.tensors import materialize

    variants.install()
    variants.take()
    old, fused_gen.FORCE = fused_gen.FORCE, True
    try:
        before = fused_gen._launches[0]
        materialize(Case(m=5, k_dim=32, n_dim=16), "cpu", where="device")
        assert fused_gen._launches[0] == before + 1  # the kernel ran
    finally:
        fused_gen.FORCE = old
    assert variants.take()["keys"] == []


def test_moe_lora_fuzz_helpers_start_sets_how_many_helpers_a_campaign_starts(monkeypatch):
    from moe_lora_fuzz.fuzz.campaign import precompile

    monkeypatch.setattr(precompile, "_Helper", lambda device, impl, cpus=None: _FakeHelper(finishes=False))
    cfg = CampaignConfig(impl="ours", device="cpu", seed=0)
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_START", "3")
    assert len(Precompiler(cfg, 4, None).helpers) == 3
    assert len(Precompiler(cfg, 2, None).helpers) == 2  # never beyond the campaign's limit
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_START", "all")
    with pytest.raises(ValueError, match="MOE_LORA_FUZZ_HELPERS_START must be a whole number"):
        Precompiler(cfg, 4, None)
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_START", "1")
    monkeypatch.setenv("MOE_LORA_FUZZ_HELPERS_BUILD", "gpu")  # refused by the campaign, before any helper
    with pytest.raises(ValueError, match="MOE_LORA_FUZZ_HELPERS_BUILD must be one of 'auto', 'host', 'device'"):
        Precompiler(cfg, 4, None)
