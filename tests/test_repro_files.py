"""Malformed repro files: fuzz.records.repro.parse/load raise ReproError naming the field, and
`python -m fuzz replay FILE` turns that into exit 2 with a one-line `error:` message.

The valid base file is written by fuzz.records.repro.save from a real Repro; each malformed variant corrupts one
field of it. Most variants are checked in-process against parse() (fast); a handful go through the CLI.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, signature
from moe_lora_fuzz.fuzz.records.repro import Repro, ReproError, load, parse, save
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.kernels.config import MoeLoraConfig, TileConfig

ROOT = Path(__file__).resolve().parents[1]
BASE_CASE = Case()
RICH_CASE = Case(
    seed=7,
    dtype="bfloat16",
    m=3,
    top_k=2,
    num_experts=4,
    num_slots=3,
    rank=8,
    real_rank=5,
    k_dim=40,
    n_dim=24,
    num_slices=2,
    layout="per_routed",
    mul_routed_weight=True,
    offset=3,
    extra_cols=2,
    routing="distinct",
    slotting="no_base",
    disabled=(2, 0),
    strided=True,
    align_slack=1,
    config=MoeLoraConfig(
        block_m=32, shrink=TileConfig(block_n=16, split_k=2), expand=TileConfig(block_k=16, group_size_m=4)
    ),
)


def _repro(case: Case = BASE_CASE) -> Repro:
    sig = signature("mismatch", "ours", case)
    verdict = Verdict(
        "mismatch",
        "ours",
        sig,
        "3 of 4 delta elements exceed the bound (worst 7.5x)",
        7.5,
        [{"index": [0, 0, 0], "got": 1.0, "expected": 2.0, "before": 0.0, "bound": 0.1}],
        0.25,
        ["slot:-1"],
    )
    return Repro(case, "ours", "cpu", verdict, {"python": "3.x", "torch": "x"})


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repro") / "base.json"
    save(_repro(), path)
    return path


@pytest.fixture(scope="module")
def base_dict(base_file) -> dict:
    return json.loads(base_file.read_text())


# ---- corruptions: each returns the file's text --------------------------------------------------------
def _edit(fn):
    """Apply fn to a deep copy of the base dict and serialise it."""

    def make(base: dict) -> str:
        d = copy.deepcopy(base)
        fn(d)
        return json.dumps(d, indent=2)

    return make


def _text(s: str):
    return lambda base: s


def _case(**changes):
    return _edit(lambda d: d["case"].update(changes))


def _stage(stage: str, **changes):
    return _edit(lambda d: d["case"]["config"][stage].update(changes))


def _verdict(**changes):
    return _edit(lambda d: d["verdict"].update(changes))


def _pop(*path):
    def fn(d):
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return _edit(fn)


def _truncated(base: dict) -> str:
    text = json.dumps(base, indent=2)
    return text[: len(text) // 2]


MALFORMED = [
    pytest.param(_truncated, r"^not valid JSON \(truncated\?\)", id="truncated-json"),
    pytest.param(_text("this is not json\n"), r"^not valid JSON", id="not-json"),
    pytest.param(_text(""), r"^not valid JSON", id="empty-file"),
    pytest.param(lambda base: json.dumps([base]), r"^top level: expected a JSON object", id="top-level-array"),
    pytest.param(_text('"a string"'), r"^top level: expected a JSON object", id="top-level-string"),
    pytest.param(
        _edit(lambda d: d.update(schema="something-else")),
        r"^schema: expected 'moe-lora-fuzz-repro', "
        r"got 'something-else'",
        id="wrong-schema",
    ),
    pytest.param(_pop("schema"), r"^schema: expected .*got None", id="missing-schema"),
    pytest.param(
        _edit(lambda d: d.update(version=99)), r"^version: unsupported schema version 99", id="unknown-version"
    ),
    pytest.param(_edit(lambda d: d.update(version=0)), r"^version: unsupported schema version 0", id="version-0"),
    pytest.param(
        _edit(lambda d: d.update(version="1")), r"^version: unsupported schema version '1'", id="version-as-string"
    ),
    pytest.param(_pop("version"), r"^version: unsupported schema version None", id="missing-version"),
    pytest.param(_pop("impl"), r"^impl: missing", id="missing-impl"),
    pytest.param(_edit(lambda d: d.update(impl=3)), r"^impl: wrong type int, expected str", id="impl-not-str"),
    pytest.param(
        _edit(lambda d: d.update(device="tpu")), r"^device: must be 'cpu' or 'cuda', got 'tpu'", id="device-tpu"
    ),
    pytest.param(_pop("case"), r"^case: missing", id="missing-case"),
    pytest.param(
        _edit(lambda d: d.update(case=[1, 2])), r"^case: wrong type list, expected dict", id="case-not-object"
    ),
    pytest.param(_case(bogus=1), r"^case\.bogus: unknown field", id="case-unknown-field"),
    pytest.param(_pop("case", "m"), r"^case\.m: missing", id="case-missing-field"),
    pytest.param(_case(m=-1), r"^case\.m: must lie in \[0, 65536\] \(got -1\)", id="case-m-negative"),
    pytest.param(_case(top_k=0), r"^case\.top_k: must lie in \[1, 16\] \(got 0\)", id="case-top_k-0"),
    pytest.param(_case(num_slices=3), r"^case\.num_slices: must be 1 or 2", id="case-num_slices-3"),
    pytest.param(_case(real_rank=2), r"^case\.real_rank: must lie in \[1, rank\]", id="case-real_rank-gt-rank"),
    pytest.param(_case(m="5"), r"^case\.m: must be an int \(got '5'\)", id="case-m-string"),
    pytest.param(_case(m=True), r"^case\.m: must be an int \(got True\)", id="case-m-bool"),
    pytest.param(_case(k_dim=4.0), r"^case\.k_dim: must be an int", id="case-k_dim-float"),
    pytest.param(
        _case(mul_routed_weight=1),
        r"^case\.mul_routed_weight: must be a bool \(got 1\)",
        id="case-mul_routed_weight-int",
    ),
    pytest.param(_case(strided="yes"), r"^case\.strided: must be a bool", id="case-strided-string"),
    pytest.param(_case(dtype="float64"), r"^case\.dtype: must be one of", id="case-dtype-unknown"),
    pytest.param(_case(layout="rows"), r"^case\.layout: must be one of", id="case-layout-unknown"),
    pytest.param(
        _case(routing="distinct", top_k=2),
        r"^case\.routing: 'distinct' needs top_k <= num_experts",
        id="case-routing-distinct-too-many",
    ),
    pytest.param(_case(disabled=[1]), r"^case\.disabled: must be distinct slot ids", id="case-disabled-out-of-range"),
    pytest.param(_case(disabled=0), r"^case\.disabled: must be a list", id="case-disabled-not-list"),
    pytest.param(
        _stage("shrink", block_n=24),
        r"^case\.config\.shrink\.block_n=24: must be a power of two",
        id="config-block_n-24",
    ),
    pytest.param(
        _stage("expand", block_k=8), r"^case\.config\.expand\.block_k=8: must be a power of two", id="config-block_k-8"
    ),
    pytest.param(_stage("shrink", split_k=0), r"^case\.config\.shrink\.split_k=0", id="config-split_k-0"),
    pytest.param(
        _stage("expand", block_n="32"), r"^case\.config\.expand\.block_n: must be an int", id="config-block_n-string"
    ),
    pytest.param(_stage("shrink", bogus=1), r"^case\.config\.shrink: .*bogus", id="config-unknown-tile-field"),
    pytest.param(
        _edit(lambda d: d["case"]["config"].update(block_m=24)), r"^case\.config\.block_m=24", id="config-block_m-24"
    ),
    pytest.param(
        _pop("case", "config", "expand"),
        r"^case\.config: fields must be block_m, shrink, expand",
        id="config-missing-expand",
    ),
    pytest.param(
        _pop("case", "config", "align"),
        r"^case\.config: fields must be block_m, shrink, expand, align",
        id="config-missing-align",
    ),
    pytest.param(
        _edit(lambda d: d["case"]["config"].update(align="cuda")),
        r"^case\.config\.align='cuda': must be",
        id="config-align-unknown",
    ),
    pytest.param(_case(config=16), r"^case\.config: expected an object", id="config-not-object"),
    pytest.param(_pop("verdict"), r"^verdict: missing", id="missing-verdict"),
    pytest.param(
        _verdict(kind="wrong-answer"), r"^verdict\.kind: unknown kind 'wrong-answer'", id="verdict-kind-unknown"
    ),
    pytest.param(_pop("verdict", "kind"), r"^verdict\.kind: missing", id="verdict-kind-missing"),
    pytest.param(_pop("verdict", "signature"), r"^verdict\.signature: missing", id="verdict-signature-missing"),
    pytest.param(_verdict(max_ratio="big"), r"^verdict\.max_ratio: wrong type", id="verdict-max_ratio-string"),
    pytest.param(_verdict(worst={}), r"^verdict\.worst: wrong type", id="verdict-worst-not-list"),
    pytest.param(_edit(lambda d: d.update(environment=[])), r"^environment: wrong type", id="environment-list"),
    # Hand-edited numeric fields of the verdict must be refused like max_ratio is, not escape as a bare
    # ValueError/TypeError from float()/list() (which the CLI does not catch: traceback instead of exit 2).
    pytest.param(_verdict(seconds="slow"), r"verdict\.seconds", id="verdict-seconds-string"),
    pytest.param(_verdict(features=5), r"verdict\.features", id="verdict-features-int"),
    pytest.param(
        _edit(lambda d: d.update(case_timeout_s=-1)),
        r"^case_timeout_s: must be a finite number > 0",
        id="case-timeout-negative",
    ),
    pytest.param(
        _edit(lambda d: d.update(case_timeout_s="NaN")),
        r"^case_timeout_s: must be a finite number",
        id="case-timeout-nan",
    ),
    pytest.param(_edit(lambda d: d.update(campaign=5)), r"^campaign: wrong type", id="campaign-int"),
    pytest.param(
        lambda base: json.dumps(base).replace('"seed": 0', '"seed": ' + "9" * 5000),
        r"^not valid JSON .*4300",
        id="int-over-4300-digits",
    ),
]


@pytest.mark.parametrize("corrupt, match", MALFORMED)
def test_parse_refuses_malformed(base_dict, corrupt, match):
    text = corrupt(base_dict)
    with pytest.raises(ReproError, match=match) as info:
        parse(text)
    assert "\n" not in str(info.value)


def test_base_file_parses(base_dict, base_file):
    """The base of every corruption above is itself valid (so the refusals are not vacuous)."""
    r = load(base_file)
    assert r.case == BASE_CASE
    assert r.impl == "ours" and r.device == "cpu"
    assert r.verdict == _repro().verdict
    assert parse(json.dumps(base_dict)).case == BASE_CASE


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "sub" / "rich.json"
    original = _repro(RICH_CASE)
    save(original, path)
    loaded = load(path)
    assert loaded.case == RICH_CASE
    assert loaded.case.disabled == (2, 0) and isinstance(loaded.case.disabled, tuple)
    assert loaded.case.config == RICH_CASE.config
    assert loaded == original
    d = json.loads(path.read_text())
    assert d["replay"] == f"moe-lora-fuzz replay {path} --impl ours --device cpu"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_load_missing_file(tmp_path):
    with pytest.raises(ReproError, match=r"nope\.json: cannot read \(No such file or directory\)"):
        load(tmp_path / "nope.json")


def test_load_directory(tmp_path):
    with pytest.raises(ReproError, match=r": not a regular file"):
        load(tmp_path)


def test_load_binary_file(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ReproError, match=r"bin\.json: not a text file"):
        load(path)


# ---- through the CLI --------------------------------------------------------------------------------
def _replay(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fuzz", "replay", str(path), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_usage_error(proc: subprocess.CompletedProcess, match: str) -> None:
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, detail
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, detail
    assert lines[0].startswith("error:"), detail
    assert "Traceback" not in proc.stderr, detail
    assert re.search(match, lines[0]), detail


CLI_MALFORMED = [
    pytest.param(_truncated, r"not valid JSON", id="truncated-json"),
    pytest.param(
        _edit(lambda d: d.update(device="tpu")), r"device: must be 'cpu' or 'cuda', got 'tpu'", id="device-tpu"
    ),
    pytest.param(_verdict(seconds="slow"), r"verdict\.seconds", id="verdict-seconds-string"),
]


def _interpreter_only_invalid_case() -> Case:
    """Valid in general (e.g. recorded on a GPU), but bf16 expand split-K cannot run under the interpreter."""
    return BASE_CASE.replace(dtype="bfloat16", config=MoeLoraConfig(expand=TileConfig(split_k=2)))


@pytest.fixture(scope="module")
def replays(tmp_path_factory, base_dict) -> dict:
    """Every CLI replay of this module, run concurrently (each pays torch's import): id -> CompletedProcess."""
    from concurrent.futures import ThreadPoolExecutor

    d = tmp_path_factory.mktemp("replay")
    paths = {}
    for p in CLI_MALFORMED:
        corrupt, _ = p.values
        paths[p.id] = d / f"{p.id}.json"
        paths[p.id].write_text(corrupt(base_dict))
    paths["missing-file"] = d / "does-not-exist.json"
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = {k: pool.submit(_replay, path) for k, path in paths.items()}
        return {k: (paths[k], f.result()) for k, f in futures.items()}


@pytest.mark.parametrize("corrupt, match", CLI_MALFORMED)
def test_replay_malformed_exits_2(request, replays, corrupt, match):
    path, proc = replays[request.node.callspec.id]
    _assert_usage_error(proc, match)
    assert str(path) in proc.stderr


def test_replay_missing_file_exits_2(replays):
    _assert_usage_error(replays["missing-file"][1], r"does-not-exist\.json.*cannot read")


def test_case_the_unpatched_interpreter_cannot_run_is_refused():
    """bf16 expand split-K needs bf16 atomics: an unpatched interpreter cannot run it (a usage error naming the
    limit, not an 'exception' finding of the kernel); the harness's interpreter patch (fuzz.runtime.interpreter) can."""
    case = _interpreter_only_invalid_case()
    case.validate(interpreter=False)
    with pytest.raises(ValueError, match=r"^case\.config: expand\.split_k > 1 with bfloat16"):
        case.validate(interpreter=True, bf16_atomics=False)
    case.validate(interpreter=True, bf16_atomics=True)


# ---- schema versions ------------------------------------------------------------------------------------
V1_FILE = ROOT / "tests" / "data" / "repro-v1.json"  # written by the harness at schema version 1, kept as is


def test_stored_v1_file_migrates():
    """A file of the previous schema loads: migrated to the current version, non-finite values kept."""
    import math

    from moe_lora_fuzz.fuzz.records.repro import VERSION

    assert json.loads(V1_FILE.read_text())["version"] == 1 < VERSION
    r = load(V1_FILE)
    assert r.impl == "mutant:topk-row-index" and r.verdict.kind == "oob-read"
    assert r.verdict.max_ratio == math.inf and math.isnan(r.verdict.worst[0]["got"])
    assert r.case_timeout_s is None and r.campaign is None  # fields v2 added, neutral for v1


@pytest.mark.interpreter
def test_stored_v1_file_replays():
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz", "replay", str(V1_FILE), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and proc.stdout.startswith("oob-read"), proc.stdout + proc.stderr
    assert f"signature: {load(V1_FILE).verdict.signature} " in proc.stdout


def test_a_new_case_knob_is_one_migration_line(monkeypatch):
    """How a future knob is added: VERSION += 1 and MIGRATIONS[old] = add_case_fields(knob=neutral). Here a
    pretend next version whose step adds a knob, checked on the stored v1 file (v1 -> ... -> VERSION + 1)."""
    import moe_lora_fuzz.fuzz.records.repro as repro

    seen, original = {}, Case.from_dict

    def case_from_dict(d):  # a Case that knows the new knob would take it; this one just records it
        seen.update(d)
        return original({k: v for k, v in d.items() if k != "new_knob"})

    new = repro.VERSION + 1
    monkeypatch.setattr(repro, "VERSION", new)
    monkeypatch.setitem(repro.MIGRATIONS, new - 1, repro.add_case_fields(new_knob=0))
    monkeypatch.setattr(repro.Case, "from_dict", staticmethod(case_from_dict))
    d = repro.migrate(json.loads(V1_FILE.read_text()))
    assert d["version"] == new and d["case"]["new_knob"] == 0 and d["campaign"] is None
    load(V1_FILE)
    assert seen["new_knob"] == 0


def test_saved_files_are_strict_json(tmp_path):
    """No bare NaN/Infinity (not JSON): a strict reader accepts what save writes; the v1 file it refuses."""

    def refuse(const):
        raise ValueError(const)

    path = tmp_path / "r.json"
    save(load(V1_FILE), path)
    json.loads(path.read_text(), parse_constant=refuse)
    with pytest.raises(ValueError):
        json.loads(V1_FILE.read_text(), parse_constant=refuse)
    assert load(path).verdict.worst[0]["got"] != load(path).verdict.worst[0]["got"]  # NaN again
