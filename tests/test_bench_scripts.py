"""The benchmark scripts' own rules (scripts/bench_campaigns.py): what they say about their numbers."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_campaigns():
    spec = importlib.util.spec_from_file_location("bench_campaigns", ROOT / "scripts" / "bench_campaigns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_warm_campaign_its_cold_one_did_not_warm_is_said_so():
    bench = _bench_campaigns()
    results = {
        "ours": ({"cases": 2}, {"cases": 953}),  # 29x: a 20 s cold campaign, a 60 s warm one still compiling
        "vllm==0.34.0": ({"cases": 400}, {"cases": 1000}),
        "broken": ({"error": "exit 2"}, {"cases": 10}),
    }
    notes = bench.cold_notes(results)
    assert len(notes) == 1 and notes[0].startswith("note: `ours` cold judged 2 cases, warm 953")


def test_the_documented_short_runs_get_a_steady_state_inside_their_budget(monkeypatch, tmp_path):
    """docs/speed.md runs `--budget 5` and `--budget 10`: the default steady start must fall inside them."""
    import sys

    bench = _bench_campaigns()
    ran = []
    monkeypatch.setattr(
        bench,
        "run_campaign",
        lambda entry, a, seed, cache, out, budget, steady: ran.append(steady) or {"error": "stood in", "wall_s": 0.0},
    )
    args = ["--device", "cpu", "--impls", "ours", "--budget", "5", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["bench_campaigns.py", *args])
    bench.main()
    assert ran == [None, 2.5]  # cold: no steady state; warm: after half its budget


def test_the_table_says_what_the_helpers_did_and_keeps_its_columns():
    bench = _bench_campaigns()
    warm = {"cases": 10, "cases_per_s": 1.0, "precompile": {"cases": 39, "compiled": 67}}
    results = {"ours": ({"cases": 5, "cases_per_s": 0.5}, warm), "x": ({"error": "exit 2"}, {"error": "exit 2"})}
    head, rule, ours, broken = bench.summary_table(results)
    assert "| 39 / 67 |" in ours
    assert bench.helper_cell({"precompile": {}}) == "none"  # a campaign without helpers
    assert {row.count("|") for row in (head, rule, ours, broken)} == {head.count("|")}
