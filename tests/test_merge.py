"""`python -m fuzz merge`: shard campaigns from several hosts become one report, nothing lost or overwritten."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.campaign.merge import MergeError, merge_reports
from moe_lora_fuzz.fuzz.cli import main
from moe_lora_fuzz.fuzz.space.coverage import REQUIRED_EDGES

ROOT = Path(__file__).resolve().parents[1]


def _shard(tmp: Path, name: str, index: int, *, cases: int, findings: list, edges: dict, files: dict) -> Path:
    d = tmp / name
    d.mkdir()
    for fname, text in files.items():
        (d / fname).write_text(text)
    report = {
        "impl": "ours",
        "device": "cpu",
        "profile": "premerge",
        "seed": 0,
        "shard": [index, 3],
        "elapsed_s": 10.0 + index,
        "cases": cases,
        "cases_per_s": cases / (10.0 + index),
        "kinds": {"pass": cases - len(findings), **{f["kind"]: f["count"] for f in findings}},
        "findings": findings,
        "coverage": {
            "knobs": {"dtype": {"float32": cases}},
            "edges": edges,
            "missing_edges": [],
            "combinations": {"c": cases},
            "noop_share": 0.5 if index == 0 else 0.0,
        },
        "phases": {"oracle/impl": {"s": 1.5, "n": cases}, **({"oracle/impl/jit": {"s": 2.0, "n": 3}} if index else {})},
        "environment": {"gpu": None},
    }
    (d / "report.json").write_text(json.dumps(report))
    return d


def _finding(sig: str, kind: str, repro: str, count: int = 1) -> dict:
    return {"signature": sig, "kind": kind, "count": count, "repro": f"/elsewhere/run/{repro}", "message": "m"}


def test_merge_sums_dedups_and_renames_clashing_repros(tmp_path):
    a = _shard(
        tmp_path,
        "a",
        0,
        cases=5,
        findings=[_finding("s1", "mismatch", "repro-000-mismatch.json", 2)],
        edges={"k_tail": 2},
        files={"repro-000-mismatch.json": "A"},
    )
    b = _shard(
        tmp_path,
        "b",
        1,
        cases=7,
        findings=[
            _finding("s2", "oob-read", "repro-000-oob-read.json"),
            _finding("s1", "mismatch", "repro-001-mismatch.json", 3),
        ],
        edges={"n_tail": 1},
        files={"repro-000-oob-read.json": "B", "repro-001-mismatch.json": "C"},
    )
    c = _shard(
        tmp_path,
        "c",
        2,
        cases=4,
        findings=[_finding("s3", "mismatch", "repro-000-mismatch.json")],
        edges={"k_tail": 1},
        files={"repro-000-mismatch.json": "D", "extra.json": "E"},
    )
    out = tmp_path / "merged"
    m = merge_reports([a, b, c], out)
    assert m["cases"] == 16 and m["merged_from"] == 3 and m["missing_shards"] == []
    assert m["kinds"] == {"pass": 12, "mismatch": 6, "oob-read": 1}
    assert m["distinct_findings"] == 3
    by_sig = {f["signature"]: f for f in m["findings"]}
    assert by_sig["s1"]["count"] == 5 and len(by_sig["s1"]["repros"]) == 2
    # every source file is in out once, none overwritten: the clashing name got the shard's suffix
    copied = sorted(p.name for p in out.glob("*.json") if p.name != "report.json")
    assert copied == [
        "extra.json",
        "repro-000-mismatch-shard2.json",
        "repro-000-mismatch.json",
        "repro-000-oob-read.json",
        "repro-001-mismatch.json",
    ]
    assert (out / "repro-000-mismatch.json").read_text() == "A"
    assert (out / "repro-000-mismatch-shard2.json").read_text() == "D"
    assert Path(by_sig["s3"]["repro"]).read_text() == "D"  # the report points at the copies
    assert all(Path(p).is_file() for f in m["findings"] for p in f["repros"])
    assert m["coverage"]["edges"] == {"k_tail": 3, "n_tail": 1}
    assert m["coverage"]["missing_edges"] == [e for e in REQUIRED_EDGES if e not in ("k_tail", "n_tail")]
    assert m["coverage"]["knobs"]["dtype"]["float32"] == 16 and m["elapsed_s"] == 12.0
    assert m["coverage"]["noop_share"] == round(0.5 * 5 / 16, 4)  # weighted by each shard's cases
    assert m["phases"] == {"oracle/impl": {"s": 4.5, "n": 16}, "oracle/impl/jit": {"s": 4.0, "n": 6}}
    assert json.loads((out / "report.json").read_text())["cases"] == 16
    # merging again into the same place reuses identical files instead of piling up copies
    merge_reports([a, b, c], out)
    assert len(list(out.glob("*.json"))) == len(copied) + 1


def test_merge_refuses_bad_inputs(tmp_path, capsys):
    good = _shard(tmp_path, "good", 0, cases=1, findings=[], edges={}, files={})
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="empty: no report.json"):
        merge_reports([good, tmp_path / "empty"], tmp_path / "o")
    with pytest.raises(MergeError, match="is also an input"):
        merge_reports([good], good)
    with pytest.raises(MergeError, match="given twice"):
        merge_reports([good, good], tmp_path / "o")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text('{"cases": "many"}')
    with pytest.raises(MergeError, match="'cases'"):
        merge_reports([tmp_path / "bad"], tmp_path / "o")
    with pytest.raises(SystemExit) as stop:
        main(["merge", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error:") and "no report.json" in err


def test_three_processes_as_hosts_then_merge(tmp_path):
    """Three shard campaigns run side by side (standing in for three hosts) on a seeded bug, then the CLI merge:
    cases and kinds add up, every repro file of every shard is in the merged directory."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "fuzz", "run", "--device", "cpu", "--impl", "mutant:lora-grid-short"]
    procs = [
        subprocess.Popen(
            run + ["--max-cases", "3", "--budget", "120", "--shard", f"{i}/3", "--out", str(tmp_path / f"shard-{i}")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode in (0, 1), err
    shards = [json.loads((tmp_path / f"shard-{i}" / f"report-shard{i}of3.json").read_text()) for i in range(3)]
    out = tmp_path / "merged"
    r = subprocess.run(
        [sys.executable, "-m", "fuzz", "merge", *(str(tmp_path / f"shard-{i}") for i in range(3)), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    m = json.loads((out / "report.json").read_text())
    assert r.returncode == (1 if m["findings"] else 0), r.stderr
    assert m["cases"] == sum(s["cases"] for s in shards) == 9
    for kind in {k for s in shards for k in s["kinds"]}:
        assert m["kinds"][kind] == sum(s["kinds"].get(kind, 0) for s in shards)
    raw = [f for i in range(3) for f in (tmp_path / f"shard-{i}").glob("*.json") if not f.name.startswith("report")]
    assert raw, "the seeded bug produced no repro file: nothing to check"
    merged_files = [f for f in out.glob("*.json") if f.name != "report.json"]
    assert sorted(f.read_text() for f in merged_files) == sorted(f.read_text() for f in raw)
    assert sum(len(f["repros"]) for f in m["findings"]) == sum(len(s["findings"]) for s in shards)
    assert all(Path(p).is_file() and Path(p).parent == out for f in m["findings"] for p in f["repros"])
    assert sorted(tuple(p["shard"]) for p in m["per_shard"]) == [(0, 3), (1, 3), (2, 3)]


def test_nightly_runs_k_shards_per_gpu_and_merges_them(tmp_path, monkeypatch, capsys):
    """scripts/nightly.py --shards-per-gpu: shard j of N*K on GPU j mod N, the host's helpers divided among all
    shards, one merged report (campaigns stood in for: this machine has no GPU)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nightly", ROOT / "scripts" / "nightly.py")
    nightly = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nightly)
    launched = []

    class Campaign:
        def __init__(self, cmd, env, **kw):
            out = Path(cmd[cmd.index("--out") + 1])
            shard = cmd[cmd.index("--shard") + 1]
            launched.append((shard, env["CUDA_VISIBLE_DEVICES"], cmd[cmd.index("--precompile") + 1]))
            _shard(out.parent, out.name, int(shard.split("/")[0]), cases=10, findings=[], edges={}, files={})

            self.polls = 0

        def poll(self):
            self.polls += 1
            return None if self.polls == 1 else 0  # running at the first look

        def wait(self):
            return 0

    monkeypatch.setattr(nightly.subprocess, "Popen", Campaign)
    monkeypatch.setattr(nightly, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(nightly, "POLL_S", 0.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    args = ["nightly.py", "--gpus", "2", "--shards-per-gpu", "3", "--budget", "1", "--out", str(tmp_path / "n")]
    monkeypatch.setattr(sys, "argv", args)
    assert nightly.main() == 0
    assert launched == [(f"{j}/6", str(j % 2), "2") for j in range(6)]  # (16 - 4) helpers over 6 shards
    assert json.loads((tmp_path / "n" / "report.json").read_text())["cases"] == 60
    out = capsys.readouterr().out
    assert "2 GPUs, 6 shards" in out and "6 of 6 shards reporting: 60 cases, 0 findings" in out, out
    monkeypatch.setattr(sys, "argv", [*args[:3], "--shards-per-gpu", "0"])
    assert nightly.main() == 2 and "--shards-per-gpu must be at least 1" in capsys.readouterr().err
    launched.clear()  # by default one campaign per 4 host cores of each GPU: 16 cores, 2 GPUs -> 2 each
    monkeypatch.setattr(sys, "argv", [*args[:3], "--budget", "1", "--out", str(tmp_path / "d")])
    assert nightly.main() == 0 and [s for s, _, _ in launched] == [f"{j}/4" for j in range(4)]
    assert [nightly.default_shards_per_gpu(g) for g in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert [nightly.default_shards_per_gpu(g) for g in (1, 8)] == [4, 4]

    def ctrl_c(*a):  # the shards got it too, wrote their reports and stopped: merged all the same
        raise KeyboardInterrupt

    monkeypatch.setattr(nightly, "_wait", ctrl_c)
    monkeypatch.setattr(sys, "argv", [*args[:5], "--budget", "1", "--out", str(tmp_path / "i")])
    assert nightly.main() == 130 and json.loads((tmp_path / "i" / "report.json").read_text())["cases"] == 60
    assert "interrupted: waiting for the shards" in capsys.readouterr().err
