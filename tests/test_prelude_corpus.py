"""Every required edge early (fuzz.execution.prelude) and findings carried forward (fuzz.campaign.corpus: run
--corpus, replay DIR / replay A B C)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.campaign.corpus import CorpusError, repro_files
from moe_lora_fuzz.fuzz.campaign.runner import PRELUDE_CASES, CampaignConfig, case_for
from moe_lora_fuzz.fuzz.execution.prelude import edges_reached, features, unreachable
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict
from moe_lora_fuzz.fuzz.records.repro import Repro, save
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES
from moe_lora_fuzz.fuzz.targets.impls import ImplProfile

ROOT = Path(__file__).resolve().parents[1]
OURS = ImplProfile(takes_config=True, ours=True)


# ---- prelude ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, profile", [("cpu", "premerge"), ("cuda", "nightly")], ids=["cpu", "gpu-nightly"])
@pytest.mark.parametrize("seed", range(6))
def test_the_first_cases_reach_every_required_edge(device, profile, seed):
    cfg = CampaignConfig(device=device, profile=profile, seed=seed)
    first = [case_for(cfg, i, OURS) for i in range(PRELUDE_CASES)]
    assert edges_reached(first) == list(REQUIRED_EDGES)
    for c in first:
        c.validate(interpreter=device == "cpu")


def test_without_the_prelude_the_stream_is_as_drawn_and_misses_edges_early():
    cfg = CampaignConfig(seed=0, prelude=False)
    with_prelude = CampaignConfig(seed=0)
    assert case_for(cfg, PRELUDE_CASES, OURS) == case_for(with_prelude, PRELUDE_CASES, OURS)  # the stream goes on
    assert case_for(cfg, 0, OURS) != case_for(with_prelude, 0, OURS)
    assert set(REQUIRED_EDGES) - set(edges_reached([case_for(cfg, i, OURS) for i in range(PRELUDE_CASES)]))


def test_seeds_draw_different_preludes():
    a = [case_for(CampaignConfig(seed=0), i, OURS) for i in range(PRELUDE_CASES)]
    b = [case_for(CampaignConfig(seed=1), i, OURS) for i in range(PRELUDE_CASES)]
    assert a != b


def test_edges_an_implementation_cannot_reach_are_named():
    plain = ImplProfile()  # no launch configuration, not ours: no split-K, no align slack
    cfg = CampaignConfig(seed=0)
    gone = unreachable(cfg, plain)
    assert set(gone) == {"shrink_split_k", "expand_split_k", "align_buffers_oversized", "n_tiles_loop"}
    reached = edges_reached([case_for(cfg, i, plain) for i in range(PRELUDE_CASES)])
    assert set(reached) | set(gone) == set(REQUIRED_EDGES)
    assert unreachable(cfg, OURS) == []


def test_host_side_features_match_the_oracles(device):
    from moe_lora_fuzz.fuzz.judgement.oracle import check
    from moe_lora_fuzz.fuzz.space.coverage import case_features

    cfg = CampaignConfig(seed=3)
    case = case_for(cfg, 1, OURS)  # a small one: M = 1
    v = check(case, "ours", device)
    assert v.kind == "pass"
    assert features(case) == set(case_features(case)) | set(v.features)


# ---- corpus -------------------------------------------------------------------------------------------------
def _save(path: Path, case: Case, impl: str, kind: str = "mismatch") -> Path:
    save(Repro(case, impl, "cpu", Verdict(kind, impl, f"{kind}|{impl}|x", "recorded"), {}), path)
    return path


SMALL = Case(m=3, top_k=2, num_experts=2, num_slots=2, rank=4, real_rank=4, k_dim=8, n_dim=8, mul_routed_weight=True)


def test_repro_files_prefer_minimal_and_skip_sanitizer_copies(tmp_path):
    _save(tmp_path / "repro-c-mismatch-1.json", SMALL, "ours")
    _save(tmp_path / "minimal-c-mismatch-1.json", SMALL, "ours")
    _save(tmp_path / "repro-c-mismatch-2.json", SMALL, "ours")
    (tmp_path / "sanitize").mkdir()
    _save(tmp_path / "sanitize" / "repro-c-x-3.json", SMALL, "ours")
    (tmp_path / "report.json").write_text("{}")
    names = [p.name for p in repro_files([tmp_path])]
    assert names == ["minimal-c-mismatch-1.json", "repro-c-mismatch-2.json"]
    with pytest.raises(CorpusError, match="no such file"):
        repro_files([tmp_path / "nope"])


def _fuzz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fuzz", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.interpreter
def test_replay_many_files_and_directories(tmp_path):
    corpus = tmp_path / "old"
    corpus.mkdir()
    _save(corpus / "repro-a-mismatch-1.json", SMALL, "mutant:routed-weight-twice")
    _save(corpus / "repro-a-mismatch-2.json", SMALL, "ours")
    proc = _fuzz("replay", str(corpus), "--device", "cpu")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("still fails") and "repro-a-mismatch-1" in ln for ln in lines), proc.stdout
    assert any(ln.startswith("passes") and "repro-a-mismatch-2" in ln for ln in lines), proc.stdout
    assert lines[-1] == "1 of 2 repro files still fail"
    only_ours = _fuzz("replay", str(corpus / "repro-a-mismatch-2.json"), str(corpus / "repro-a-mismatch-2.json"))
    assert only_ours.returncode == 0 and only_ours.stdout.splitlines()[-1] == "0 of 2 repro files still fail"
    (corpus / "repro-bad.json").write_text("{")
    bad = _fuzz("replay", str(corpus), "--device", "cpu")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "repro-bad.json" in bad.stderr
    named = tmp_path / "named"  # a directory of files named by hand: the error says which names are searched
    named.mkdir()
    _save(named / "my-case.json", SMALL, "ours")
    none = _fuzz("replay", str(named), "--device", "cpu")
    assert none.returncode == 2 and "repro-*.json" in none.stderr and "one by one" in none.stderr, none.stderr


@pytest.mark.interpreter
def test_run_with_a_corpus_replays_it_first(tmp_path):
    corpus = tmp_path / "old"
    corpus.mkdir()
    _save(corpus / "repro-a-mismatch-1.json", SMALL, "ours")  # our kernels pass it: fixed
    _save(corpus / "repro-a-mismatch-2.json", SMALL.replace(seed=5), "ours")
    out = tmp_path / "new"
    proc = _fuzz(
        "run", "--device", "cpu", "--impl", "mutant:routed-weight-twice", "--max-cases", "3", "--out", str(out),
        "--corpus", str(corpus), "--triage-share", "0",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("CORPUS still fails") == 2, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["corpus"]["replayed"] == 2 and report["corpus"]["still_failing"] == 2
    assert report["cases"] == 3  # then the three cases asked for (corpus replays are counted apart)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
