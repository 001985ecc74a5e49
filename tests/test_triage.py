"""Triage: failure-following signatures, vacuous, oob-read attribution, minimise/explain/group, triage CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, check, crash_failure
from moe_lora_fuzz.fuzz.records.repro import load
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.triage.minimize import same_failure
from moe_lora_fuzz.fuzz.triage.triager import Triager, group_findings, group_reports, root_key

ROOT = Path(__file__).resolve().parents[1]
BASE = Case(m=3, top_k=2, num_experts=2, num_slots=2, rank=4, real_rank=4, k_dim=8, n_dim=8)


# ---- signatures follow the failure -----------------------------------------------------------------
def _raise_value_error(**kw):
    raise ValueError("bad shape 0x7f3a")


def _raise_type_error(**kw):
    raise TypeError("bad type")


def _raise_inside_torch(**kw):
    torch.cat([kw["x"], kw["x"][:, :1].T])  # torch raises; the first frame inside the implementation is here


def _as_impl(fn):
    return lambda t: fn(**t.op_kwargs())


@pytest.mark.parametrize(
    "fn, expect",
    [
        (_raise_value_error, "ValueError@tests/test_triage.py:_raise_value_error"),
        (_raise_type_error, "TypeError@tests/test_triage.py:_raise_type_error"),
        (_raise_inside_torch, "RuntimeError@tests/test_triage.py:_raise_inside_torch"),
    ],
    ids=["value-error", "type-error", "raised-inside-torch"],
)
def test_exception_signature_is_type_and_first_frame_of_the_implementation(fn, expect, device):
    v = check(BASE, "raiser", device, impl=_as_impl(fn))
    assert v.kind == "exception" and v.failure == expect, v
    assert expect in v.signature and "0x7f3a" not in v.signature  # no line numbers, no addresses
    other = check(
        BASE, "raiser", device, impl=_as_impl(_raise_type_error if fn is _raise_value_error else _raise_value_error)
    )
    assert other.signature != v.signature
    assert not same_failure(v.to_dict(), other.to_dict())  # the minimiser never trades one for the other


def test_crash_detail_without_addresses():
    assert crash_failure("worker process died (exit code -11)") == "exit-11"
    assert crash_failure("no answer within 300 s (hang)") == "hang"
    assert crash_failure("worker broke: RuntimeError: CUDA error at 0x7f00") == "broke:RuntimeError"


def test_same_failure_groups_kinds_of_one_family():
    def vd(kind, failure=""):
        return {"kind": kind, "failure": failure}

    assert same_failure(vd("oob-read"), vd("mismatch")) and same_failure(vd("vacuous"), vd("metamorphic"))
    assert not same_failure(vd("mismatch"), vd("oob-write")) and not same_failure(vd("mismatch"), vd("exception"))
    assert not same_failure(vd("mismatch"), vd("pass"))
    assert same_failure(vd("exception", "A@f"), vd("exception", "A@f"))
    assert not same_failure(vd("exception", "A@f"), vd("exception", "A@g"))


# ---- vacuous ---------------------------------------------------------------------------------------------
def test_an_implementation_that_touches_nothing_is_vacuous(device):
    def nothing(t):
        pass

    v = check(BASE.replace(slotting="no_base"), "nothing", device, impl=nothing)
    assert v.kind == "vacuous", v
    # no active pair (every token on the base model, or no token at all): doing nothing is right
    assert check(BASE.replace(slotting="all_base"), "nothing", device, impl=nothing).kind == "pass"
    assert check(BASE.replace(m=0), "nothing", device, impl=nothing).kind == "pass"
    assert check(BASE.replace(slotting="one_slot", disabled=(0, 1)), "nothing", device, impl=nothing).kind == "pass"


# ---- oob-read attribution --------------------------------------------------------------------------------
def test_oob_read_names_x_for_the_topk_row_index_mutant(device):
    repro = load(ROOT / "tests/regressions/topk-row-index.json")
    v = check(repro.case, repro.impl, device)
    assert v.kind == "oob-read", v
    assert v.message.endswith("guard margins of x"), v.message


def test_oob_read_names_the_input_read_out_of_bounds(device):
    """An implementation that reads topk_weights one element past its end is named for topk_weights only."""
    from tests.example_impl import torch_moe_lora

    def shifted_weights(t):
        kw = t.op_kwargs()
        w = kw["topk_weights"]
        kw["topk_weights"] = w.as_strided(w.shape, w.stride(), w.storage_offset() + 1)
        torch_moe_lora(**kw)

    case = BASE.replace(mul_routed_weight=True, slotting="no_base")
    v = check(case, "shifted", device, impl=shifted_weights)
    assert v.kind == "oob-read", v
    assert v.message.endswith("guard margins of topk_weights"), v.message


# ---- minimise, explain, group ---------------------------------------------------------------------------
def _fake_judge(bugs):
    """A judge with planted bugs, each a predicate over the case: mismatch when any holds."""
    runs = []

    def judge(case: Case) -> dict:
        runs.append(case)
        kind = "mismatch" if any(b(case) for b in bugs) else "pass"
        return Verdict(kind, "fake", f"{kind}|fake|{case.coarse_class}" if kind != "pass" else "").to_dict()

    judge.runs = runs
    return judge


ROUTED_TWICE = lambda c: c.mul_routed_weight  # noqa: E731
SECOND_SLICE = lambda c: c.num_slices == 2  # noqa: E731
# starting points like a campaign's raw findings: each bug alone, both at once, in various classes
STARTS = [
    BASE.replace(mul_routed_weight=True, dtype="float16", strided=True, offset=3),
    BASE.replace(num_slices=2, layout="per_routed", m=7, k_dim=40),
    BASE.replace(mul_routed_weight=True, num_slices=2, dtype="bfloat16", disabled=(1,)),
    BASE.replace(num_slices=2, mul_routed_weight=False, rank=9, real_rank=5, extra_cols=2),
    BASE.replace(mul_routed_weight=True, layout="per_routed", top_k=3),
]


def _triage_all(bugs, tmp_path) -> tuple[list, dict]:
    judge = _fake_judge(bugs)
    triager = Triager("fake", "cpu", tmp_path, {})
    findings = []
    for i, case in enumerate(STARTS):
        vd = judge(case)
        if vd["kind"] == "pass":
            continue
        f = {
            "signature": f"{vd['signature']}#{i}",
            "kind": vd["kind"],
            "count": 1,
            "repro": str(tmp_path / f"repro-{i:03d}-x.json"),
        }
        triager.triage(f, case, vd, judge, budget=30.0)
        findings.append(f)
    return group_findings(findings, "fake"), judge


def test_two_independent_bugs_are_two_root_causes(tmp_path):
    causes, _ = _triage_all([ROUTED_TWICE, SECOND_SLICE], tmp_path)
    assert len(causes) == 2, [c["trigger"] for c in causes]
    essentials = sorted(tuple(sorted(c["essential"])) for c in causes)
    assert essentials == [("mul_routed_weight",), ("num_slices",)]
    assert all(Path(c["minimal_repro"]).is_file() for c in causes)
    both = [f for c in causes for f in c["findings"] if f["signature"].endswith("#2")]
    assert len(both) == 2  # the finding with both bugs is explained by each cause
    assert "disappears with mul_routed_weight=False" in next(
        c["trigger"] for c in causes if "mul_routed_weight" in c["essential"]
    )


def test_one_bug_is_one_root_cause_whatever_the_class(tmp_path):
    causes, judge = _triage_all([ROUTED_TWICE], tmp_path)
    assert len(causes) == 1 and len(causes[0]["findings"]) == 3
    assert causes[0]["essential"] == {"mul_routed_weight": True}
    assert causes[0]["minimal_case"] == "mul_routed_weight=True"


def test_a_cause_that_fails_on_the_simplest_case_explains_nothing_else(tmp_path):
    """A bug present everywhere has no essential knob: no flip explains anything. Every other finding of
    its family would minimise onto the simplest case, i.e. onto it, so they join it without a run (a second
    bug of that family is hidden by it either way)."""
    always = lambda c: True  # noqa: E731
    causes, judge = _triage_all([always], tmp_path)
    assert len(causes) == 1 and causes[0]["trigger"].startswith("mismatch: fails on the simplest case")
    # the later findings joined it without a run: minimising them would end on the simplest case too
    assert [f["via"].split(" ")[0] for f in causes[0]["findings"]] == ["minimised"] + ["joins"] * 4


def test_root_key_ignores_seed_and_block_thresholds():
    a = root_key(
        "i", "wrong-output", "", {"rank": 17, "real_rank": 17, "expand.block_k": 16, "expand.split_k": 3, "seed": 11}
    )
    b = root_key("i", "wrong-output", "", {"rank": 33, "expand.split_k": 2})
    assert a == b
    assert root_key("i", "wrong-output", "", {"top_k": 2, "num_slots": 2}) == root_key(
        "i", "wrong-output", "", {"num_experts": 2, "num_slots": 2}
    )
    assert root_key("i", "wrong-output", "", {"num_slices": 2}) != root_key("i", "wrong-output", "", {"offset": 1})
    assert root_key("i", "wrong-output", "", {}) != root_key("i", "stray-write", "", {})


def test_group_reports_merges_shards_by_root_key():
    def finding(sig, key):
        info = {
            "key": key,
            "kind": "mismatch",
            "family": "wrong-output",
            "failure": "",
            "trigger": f"t {key}",
            "essential": {},
            "disappears_with": [],
            "minimal_repro": f"min-{sig}",
            "minimal_case": "",
            "via": "minimised",
        }
        return {"signature": sig, "kind": "mismatch", "count": 2, "repro": f"r-{sig}", "triage": info}

    shard0 = {"impl": "x", "findings": [finding("a", "K1"), finding("b", "K2")]}
    shard1 = {
        "impl": "x",
        "findings": [
            finding("c", "K1"),
            {"signature": "d", "kind": "crash", "count": 1, "repro": "r-d", "triage": None},
        ],
    }
    causes = group_reports([shard0, shard1])
    assert [c["signature"] for c in causes] == ["K1", "K2", "untriaged|d"]
    assert [f["signature"] for f in causes[0]["findings"]] == ["a", "c"]
    assert causes[2]["triaged"] is False and causes[0]["minimal_repro"] == "min-a"


def test_untriaged_findings_group_by_failure_site_not_by_occurrence():
    """66 untriaged CompilationErrors of one line were 66 root causes in a 300 s GPU campaign: one entry per site."""

    def untriaged(sig):
        return {"signature": sig, "kind": sig.split("|")[0], "count": 1, "repro": f"r-{sig}", "triage": None}

    site = "exception|CompilationError@k.py:shrink"
    findings = [untriaged(f"{site}|x|{d}|per_token|mrw=0") for d in ("float16", "bfloat16", "float32")]
    findings += [untriaged("exception|ValueError@k.py:expand|x|float16"), untriaged("mismatch|x|float16|per_token")]
    findings.append(untriaged("mismatch|x|bfloat16|per_routed"))
    causes = group_findings(findings, "x")
    assert [(c["signature"], len(c["findings"])) for c in causes] == [
        (f"untriaged|{site}", 3),
        ("untriaged|exception|ValueError@k.py:expand", 1),
        ("untriaged|mismatch|x", 2),
    ]
    assert all(not c["triaged"] and "triage DIR tries again" in c["trigger"] for c in causes)


# ---- CLI --------------------------------------------------------------------------------------------------
def _cli(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "fuzz", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


@pytest.mark.interpreter
def test_triage_cli_groups_a_campaign_directory(tmp_path, device):
    """A finished campaign whose findings were never triaged (two raw findings of one bug, in two classes):
    `triage DIR` minimises and groups them, writing root_causes into the report; raw repro files stay."""
    from moe_lora_fuzz.fuzz.records.repro import Repro, save

    impl = "tests/example_impl.py:torch_moe_lora_buggy"
    out = tmp_path / "c"
    findings = []
    for i, case in enumerate(
        [
            BASE.replace(mul_routed_weight=True, dtype="float16", offset=2),
            BASE.replace(mul_routed_weight=True, layout="per_routed", strided=True),
        ]
    ):
        v = check(case, impl, "cpu")
        assert v.kind == "mismatch", v
        path = out / f"repro-{i:03d}-mismatch.json"
        save(Repro(case, impl, "cpu", v, {}), path)
        findings.append({"signature": v.signature, "kind": v.kind, "count": 1, "repro": str(path)})
    (out / "report.json").write_text(json.dumps({"impl": impl, "device": "cpu", "findings": findings}))
    refused = _cli("triage", str(out), "--device", "cpu")  # the report names external code: never run unasked
    assert refused.returncode == 2 and "pass --impl" in refused.stderr, refused.stderr[-2000:]
    tri = _cli("triage", str(out), "--device", "cpu", "--cap", "20", "--impl", impl)
    assert tri.returncode == 1, tri.stderr[-2000:]
    after = json.loads((out / "report.json").read_text())
    assert len(after["root_causes"]) == 1, after["root_causes"]
    rc = after["root_causes"][0]
    assert rc["essential"] == {"mul_routed_weight": True} and Path(rc["minimal_repro"]).is_file()
    assert [f["repro"] for f in rc["findings"]] == [f["repro"] for f in findings]
    assert all(Path(f["repro"]).is_file() for f in findings)
    assert "2 findings in 1 reports, 1 root causes" in tri.stdout
    missing = _cli("triage", str(tmp_path / "missing"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "report.json" in missing.stderr


@pytest.mark.interpreter
def test_minimize_re_judges_an_edited_file_with_another_impl(tmp_path):
    """The recorded implementation is a mutant; --impl names another with the same bug: the file is judged
    again, minimised, and the trigger names the knob."""
    src = json.loads((ROOT / "tests/regressions/routed-weight-twice.json").read_text())
    src["case"]["m"] = 5  # an edited file: the recorded verdict no longer describes it
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(src))
    res = _cli(
        "minimize",
        str(path),
        "--out",
        str(tmp_path / "min.json"),
        "--budget",
        "60",
        "--device",
        "cpu",
        "--impl",
        "tests/example_impl.py:torch_moe_lora_buggy",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "note: recorded" in res.stderr
    assert "trigger: mismatch: needs mul_routed_weight" in res.stdout
    assert (
        "dropped from the old signature: dtype: 'float16' -> 'float32'; layout: 'per_routed' -> 'per_token'"
        in res.stdout
    )
    assert load(tmp_path / "min.json").case.m == 1


def test_verdicts_record_the_implementations_settings(device):
    from tests.example_impl import torch_moe_lora

    def configured(t):
        torch_moe_lora(**t.op_kwargs())

    configured.settings = {"block_size_m": 16, "dtype": torch.float32}
    v = check(BASE.replace(slotting="no_base"), "configured", device, impl=configured)
    assert v.kind == "pass" and v.impl_settings == {"block_size_m": 16, "dtype": "torch.float32"}
    assert check(BASE, "plain", device, impl=lambda t: torch_moe_lora(**t.op_kwargs())).impl_settings is None


@pytest.mark.parametrize(
    "args, match",
    [
        (("--triage-share", "1.5"), "--triage-share: must lie in [0, 1]"),
        (("--triage-cap", "0"), "--triage-cap: must be > 0 seconds"),
    ],
)
def test_triage_flags_usage_errors(tmp_path, args, match):
    proc = _cli("run", "--device", "cpu", "--out", str(tmp_path / "o"), *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {match}"), proc.stderr[-2000:]


def test_a_finding_the_budget_could_not_explain_is_never_merged():
    from moe_lora_fuzz.fuzz.triage.triager import triage_case

    judge = _fake_judge([ROUTED_TWICE])
    vd = judge(STARTS[0])
    tri = triage_case(STARTS[0], judge, vd, budget=0.0, interpreter=True)
    assert not tri.explained and not tri.one_minimal and tri.essential == {}
    assert "not explained" in tri.key("fake") and "not explained" in tri.trigger()
    assert tri.key("fake") != root_key("fake", "wrong-output", "", {})  # not "fails on the simplest case"


def test_one_defect_with_two_symptoms_is_one_root_cause(tmp_path):
    """topk-row-index picks the row by mul_routed_weight instead of the layout: it fails as (mrw, per_token)
    and as (no mrw, per_routed). Both minimal cases need the same knobs {top_k, layout, mrw}: one cause."""
    row_by_flag = lambda c: c.top_k > 1 and c.mul_routed_weight == (c.layout == "per_token")  # noqa: E731
    judge = _fake_judge([row_by_flag])
    triager = Triager("fake", "cpu", tmp_path, {})
    findings = []
    for i, case in enumerate(
        [
            BASE.replace(mul_routed_weight=True, dtype="float16"),
            BASE.replace(layout="per_routed", strided=True, top_k=3),
        ]
    ):
        vd = judge(case)
        f = {"signature": f"s{i}", "kind": vd["kind"], "count": 1, "repro": str(tmp_path / f"repro-{i:03d}-x.json")}
        triager.triage(f, case, vd, judge, budget=30.0)
        findings.append(f)
    causes = group_findings(findings, "fake")
    assert len(causes) == 1, [c["trigger"] for c in causes]
    assert {f["triage"]["essential"]["layout"] for f in findings} == {"per_token", "per_routed"}
    # with the budget spent, a third finding of the second symptom attaches through that symptom's flips
    late = BASE.replace(layout="per_routed", top_k=2, m=5, dtype="bfloat16")
    vd = judge(late)
    f = {"signature": "s2", "kind": vd["kind"], "count": 1, "repro": str(tmp_path / "repro-002-x.json")}
    triager.triage(f, late, vd, judge, budget=0.0)
    assert f["triage"]["via"].startswith("explained by") and f["triage"]["key"] == findings[0]["triage"]["key"]


# ---- data-dependent triggers, twin disagreements, a spent budget -------------------------------------------
def _triage_starts(judge, starts, tmp_path, budget=30.0) -> list[dict]:
    triager = Triager("fake", "cpu", tmp_path, {})
    findings = []
    for i, case in enumerate(starts):
        vd = judge(case)
        assert vd["kind"] != "pass", case
        f = {"signature": f"s{i}", "kind": vd["kind"], "count": 1, "repro": str(tmp_path / f"repro-{i:03d}-x.json")}
        triager.triage(f, case, vd, judge, budget=budget)
        findings.append(f)
    return findings


# a disabled slot receives a delta, visible only when the drawn data puts a token on it: which seeds do
# depends on the sizes (as the real generator's draws do), so minimal cases reach {rank} or {seed}
ON_DISABLED_SLOT = lambda c: bool(c.disabled) and (c.seed + c.rank) % 3 == 2  # noqa: E731


def test_a_size_that_only_chose_the_data_is_not_essential(tmp_path):
    judge = _fake_judge([ON_DISABLED_SLOT])
    starts = [
        BASE.replace(num_slots=3, disabled=(1,), rank=5, real_rank=5),  # seed 0: needs rank 5
        BASE.replace(num_slots=2, disabled=(1,), seed=11, rank=6, real_rank=6, mul_routed_weight=True),
    ]
    findings = _triage_starts(judge, starts, tmp_path)
    causes = group_findings(findings, "fake")
    assert len(causes) == 1, [c["trigger"] for c in causes]
    assert causes[0]["essential"] == {"disabled": (0,)}
    assert "rank=5 only chose the data" in causes[0]["trigger"], causes[0]["trigger"]


def test_data_dependent_bug_and_a_second_bug_stay_two(tmp_path):
    judge = _fake_judge([ON_DISABLED_SLOT, SECOND_SLICE])
    starts = [
        BASE.replace(num_slots=3, disabled=(1,), rank=5, real_rank=5),
        BASE.replace(num_slices=2, rank=3, real_rank=3, m=4),  # rank 3 + seed 0: the first bug is absent
        BASE.replace(num_slots=2, disabled=(0,), seed=8, num_slices=2, rank=3, real_rank=3),  # both
    ]
    causes = group_findings(_triage_starts(judge, starts, tmp_path), "fake")
    assert len(causes) == 2, [c["trigger"] for c in causes]
    assert sorted(tuple(sorted(c["essential"])) for c in causes) == [("disabled",), ("num_slices",)]


def test_a_configuration_twin_disagreement_is_triaged_as_the_twin(tmp_path):
    """A bug only split-K shrink has, found because the twin ran split-K 2 while the case ran 1: triaged as
    the twin's own case, it needs shrink.split_k and is one cause with the finding that ran split-K itself."""
    from moe_lora_fuzz.fuzz.judgement.oracle import _twin_cases

    splitk = lambda c: c.config.shrink.split_k > 1  # noqa: E731

    class TwinJudge:
        def __init__(self, metamorphic):
            self.metamorphic = metamorphic

        def __call__(self, case):
            if splitk(case):
                return Verdict("uninit-read", "fake", f"uninit-read|fake|{case.coarse_class}").to_dict()
            if self.metamorphic and any(splitk(t) for t in _twin_cases(case)):
                msg = "another configuration (...) disagrees beyond 2x the bound"
                return Verdict("metamorphic", "fake", f"metamorphic|fake|{case.coarse_class}", msg).to_dict()
            return Verdict("pass", "fake", "").to_dict()

        def plain(self):
            return TwinJudge(False)

    triager = Triager("fake", "cpu", tmp_path, {})
    findings = []
    starts = [(BASE.replace(dtype="float16"), True), (STARTS[0], False), (STARTS[1], True)]
    for i, (case, meta) in enumerate(starts):
        if not meta:
            case = case.replace(config=case.config.with_knob("shrink.split_k", 2))
        judge = TwinJudge(meta)
        vd = judge(case)
        f = {"signature": f"s{i}", "kind": vd["kind"], "count": 1, "repro": str(tmp_path / f"repro-{i:03d}-x.json")}
        triager.triage(f, case, vd, judge, budget=30.0)
        findings.append(f)
    assert findings[0]["kind"] == "metamorphic" and "configuration twin" in findings[0]["triage"]["via"]
    assert findings[2]["triage"]["via"].startswith("explained by") and "twin" in findings[2]["triage"]["via"]
    causes = group_findings(findings, "fake")
    assert len(causes) == 1 and causes[0]["essential"] == {"shrink.split_k": 2}, [c["trigger"] for c in causes]


@pytest.mark.parametrize("bugs, expect", [([ROUTED_TWICE], 1), ([ROUTED_TWICE, SECOND_SLICE], 2)], ids=["one", "two"])
def test_a_spent_budget_groups_by_signature_without_merging_bugs(tmp_path, bugs, expect):
    """No budget to minimise (a fresh GPU compiling): findings are grouped provisionally by kind family and
    the class changes that remove them; one bug stays one entry, two bugs two."""
    judge = _fake_judge(bugs)
    starts = [c for c in STARTS if judge(c)["kind"] != "pass"]
    findings = _triage_starts(judge, starts, tmp_path, budget=0.0)
    causes = group_findings(findings, "fake")
    assert len(causes) == expect, [c["signature"] for c in causes]
    assert all(not c["triaged"] and "untriaged: grouped by signature" in c["signature"] for c in causes)
    assert all(f["triage"]["via"] == "provisional" for f in findings)


def test_a_spent_budget_still_attaches_to_a_known_cause(tmp_path):
    judge = _fake_judge([ROUTED_TWICE])
    triager = Triager("fake", "cpu", tmp_path, {})
    findings = []
    for i, (case, budget) in enumerate([(STARTS[0], 30.0), (STARTS[2], 0.0), (STARTS[4], 0.0)]):
        vd = judge(case)
        f = {"signature": f"s{i}", "kind": vd["kind"], "count": 1, "repro": str(tmp_path / f"repro-{i:03d}-x.json")}
        triager.triage(f, case, vd, judge, budget=budget)
        findings.append(f)
    causes = group_findings(findings, "fake")
    assert len(causes) == 1 and causes[0]["triaged"] and len(causes[0]["findings"]) == 3
    assert [f["triage"]["via"].split(" ")[0] for f in findings] == ["minimised", "explained", "explained"]


def _wild_judge(crash, wrong):
    """A judge whose planted bugs segfault (crash, exit-11) or give wrong values (mismatch)."""

    def judge(case: Case) -> dict:
        if crash(case):
            return Verdict("crash", "fake", "crash|exit-11|fake", "died", failure="exit-11").to_dict()
        kind = "mismatch" if wrong(case) else "pass"
        return Verdict(kind, "fake", f"{kind}|fake" if kind != "pass" else "").to_dict()

    return judge


# one stride bug: slots after the first are read at the wrong place once the padded length moves; through
# the oversized buffer (align_slack) the read lands far away and segfaults, else it reads wrong rows
FAR = lambda c: c.num_slots > 1 and c.align_slack > 0  # noqa: E731
NEAR = lambda c: c.num_slots > 1 and c.m * c.top_k > 1  # noqa: E731
WILD_STARTS = [BASE.replace(num_slots=2, dtype="float16"), BASE.replace(num_slots=3, align_slack=2, rank=9)]


def test_a_segfault_and_wrong_values_of_one_wild_access_are_one_cause(tmp_path):
    causes = group_findings(_triage_starts(_wild_judge(FAR, NEAR), WILD_STARTS, tmp_path), "fake")
    assert len(causes) == 1, [c["trigger"] for c in causes]
    assert "the same wild access" in causes[0]["findings"][1]["via"]


@pytest.mark.parametrize("masked", [False, True], ids=["apart", "crash-hides-the-other"])
def test_a_segfault_and_an_independent_wrong_value_bug_stay_two(tmp_path, masked):
    """The wrong values need mul_routed_weight, the segfault does not (both need two slots): even when the
    crashing finding also has the other bug (minimising meets its mismatch, and the shared num_slots flip
    removes both), a flag between them is another code path: two causes."""
    starts = [WILD_STARTS[0].replace(mul_routed_weight=True), WILD_STARTS[1].replace(mul_routed_weight=masked)]
    judge = _wild_judge(FAR, lambda c: c.mul_routed_weight and c.num_slots > 1)  # shares num_slots
    causes = group_findings(_triage_starts(judge, starts, tmp_path), "fake")
    assert len(causes) == 2, [c["trigger"] for c in causes]


def test_a_disabled_slot_is_renumbered_toward_slot_0(tmp_path):
    """Disabled slot 2 needs three slots; renumbered to slot 0 it needs one: every finding of a bug about
    disabled slots reaches the same minimal case, whatever slot the campaign disabled."""
    judge = _fake_judge([lambda c: bool(c.disabled)])
    starts = [BASE.replace(num_slots=3, disabled=(2,)), BASE.replace(num_slots=2, disabled=(0,), dtype="float16")]
    findings = _triage_starts(judge, starts, tmp_path)
    assert {f["triage"]["minimal_case"] for f in findings} == {"disabled=(0,)"}
    assert len(group_findings(findings, "fake")) == 1


# One stride bug that shows once the padded length leaves a block multiple, through any of several sizes: each
# minimal case keeps one of them (num_experts, align_slack, strided rows), a full-size case several at once.
STRIDE = lambda c: c.num_slots > 1 and (c.num_experts > 1 or c.align_slack > 0 or c.strided)  # noqa: E731
STRIDE_STARTS = [
    BASE.replace(num_slots=2, num_experts=3, dtype="float16"),
    BASE.replace(num_slots=3, num_experts=1, top_k=1, align_slack=2, rank=9),
    BASE.replace(num_slots=2, num_experts=1, top_k=1, strided=True, m=5),
    BASE.replace(num_slots=4, num_experts=4, align_slack=1, strided=True, m=9, mul_routed_weight=True),
]


def test_one_bug_reached_through_several_sizes_is_one_cause(tmp_path):
    """Two minimal forms that share num_slots and differ only in a size join one cause; then findings that no
    single form's flips can undo (strided rows, or several sizes at once keep the bug alive) attach by the
    shared knob."""
    findings = _triage_starts(_fake_judge([STRIDE]), STRIDE_STARTS, tmp_path)
    causes = group_findings(findings, "fake")
    assert len(causes) == 1, [c["trigger"] for c in causes]
    minimal = [f["triage"]["minimal_case"] for f in findings[:2]]
    assert minimal == ["num_experts=2 num_slots=2", "num_slots=2 align_slack=1"]
    assert "the same defect as" in findings[1]["triage"]["via"]
    assert all("its forms share num_slots" in f["triage"]["via"] for f in findings[2:])
    assert causes[0]["trigger"].endswith("; or needs num_slots=2 and align_slack=1")


def test_two_bugs_sharing_a_size_but_not_a_flag_stay_two(tmp_path):
    """A second bug that also needs two slots, but needs mul_routed_weight too: neither the join (a flag
    between the forms) nor the attach by the shared knob (the flag's flip removes it) takes it."""
    flag = lambda c: c.num_slots > 1 and c.mul_routed_weight  # noqa: E731
    starts = STRIDE_STARTS[:3] + [BASE.replace(num_slots=2, num_experts=1, top_k=1, mul_routed_weight=True, m=5)]
    findings = _triage_starts(_fake_judge([STRIDE, flag]), starts, tmp_path)
    causes = group_findings(findings, "fake")
    assert len(causes) == 2, [c["trigger"] for c in causes]
    assert findings[3]["triage"]["minimal_case"] == "num_slots=2 mul_routed_weight=True"
