"""Every field of a repro file, three ways: a wrong type, missing, and out of range. Each malformed file is
refused with a ReproError whose one line starts with the field's path; the few fields that are optional or
informational say so in OPTIONAL and are checked to load with their default.

The table is complete by construction: test_every_field_is_covered walks the schema (top-level keys, every
field of Case, of MoeLoraConfig, of both TileConfigs, of Verdict) and fails on any field without its rows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
from moe_lora_fuzz.fuzz.judgement.oracle import Verdict, signature
from moe_lora_fuzz.fuzz.records.repro import VERSION, Repro, ReproError, parse
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.kernels.config import MoeLoraConfig, TileConfig

BASE = Case()  # num_slots = 1, rank = 1: the ranges below are relative to it
TILE_FIELDS = [f.name for f in dataclasses.fields(TileConfig)]


def _base() -> dict:
    verdict = Verdict(
        "mismatch",
        "ours",
        signature("mismatch", "ours", BASE),
        "1 of 1 delta elements exceed",
        2.5,
        [{"index": [0, 0, 0], "got": 1.0, "expected": 2.0, "before": 0.0, "bound": 0.1}],
        0.5,
        ["m_is_1"],
    )
    return json.loads(json.dumps(Repro(BASE, "ours", "cpu", verdict, {"python": "3.11"}).to_dict("f.json")))


# (path, wrong-type value, out-of-range values); path is the dotted location of the field
TOP = [
    ("schema", 5, ["moe-lora-fuzz-repro-2"]),
    ("version", "1", [0, VERSION + 1]),
    ("impl", 3, []),
    ("device", 1, ["tpu"]),
    ("case", [1], []),
    ("verdict", "mismatch", []),
    ("environment", [], []),
    ("harness", 5, []),
    ("case_timeout_s", "x", [0, -1]),
    ("campaign", 5, []),
]
CASE = [
    ("seed", "1", [-1, 2**63]),
    ("dtype", 16, ["float64"]),
    ("m", "5", [-1, 65537]),
    ("top_k", 1.0, [0, 17]),
    ("num_experts", "2", [0, 513]),
    ("num_slots", None, [0, 65]),
    ("rank", [1], [0, 257]),
    ("real_rank", "1", [0, 2]),
    ("k_dim", 1.5, [0, 16385]),
    ("n_dim", True, [0, 16385]),
    ("num_slices", "1", [0, 3]),
    ("layout", 0, ["rows"]),
    ("mul_routed_weight", 1, []),
    ("offset", "0", [-1, 1025]),
    ("extra_cols", 0.0, [-1, 1025]),
    ("routing", None, ["zipf"]),
    ("slotting", 1, ["everyone"]),
    ("disabled", "0", [[1], [0, 0], ["0"]]),
    ("strided", "no", []),
    ("align_slack", "0", [-1, 1025]),
    ("quant", 5, ["fp4_w4a16"]),
    ("quant_group", None, ["row"]),
    ("quant_block_n", "16", [8, 24, 512]),
    ("quant_block_k", 16.0, [8, 48, 512]),
    ("act_scale", 0, ["sometimes"]),
    ("config", 16, []),
]
CONFIG = [("block_m", "16", [8, 24, 512]), ("shrink", "tile", []), ("expand", [], []), ("align", 3, ["cuda"])]
TILE = [
    ("block_n", "32", [8, 24, 512]),
    ("block_k", 32.0, [8, 48, 512]),
    ("group_size_m", "1", [0, 65]),
    ("split_k", None, [0, 65]),
    ("num_warps", "4", [3, 32]),
    ("num_stages", 2.5, [0, 9]),
    ("n_tiles", "1", [0, 65]),
]
VERDICT = [
    ("kind", 5, ["wrong-answer"]),
    ("impl", 5, []),
    ("signature", ["x"], []),
    ("message", 5, []),
    ("max_ratio", "big", []),
    ("worst", {}, []),
    ("seconds", "slow", []),
    ("features", 5, [[1]]),
    ("failure", 5, []),
    ("impl_settings", [1], []),
]

# fields that may be missing (loaded with a default) or hold free text: no range to leave
OPTIONAL = {
    "environment",
    "verdict.message",
    "verdict.max_ratio",
    "verdict.worst",
    "verdict.seconds",
    "verdict.features",
    "harness",
    "case_timeout_s",
    "campaign",
    "verdict.failure",
    "verdict.impl_settings",
}
NO_RANGE = {
    "impl": "free text, resolved only when replayed (fuzz.targets.impls)",
    "case": "an object: see its fields",
    "verdict": "an object: see its fields",
    "environment": "free-form facts about the machine",
    "case.mul_routed_weight": "a bool",
    "case.strided": "a bool",
    "case.config": "an object",
    "case.config.shrink": "an object",
    "case.config.expand": "an object",
    "verdict.impl": "free text",
    "verdict.signature": "free text",
    "verdict.message": "free text",
    "verdict.max_ratio": "any number is a ratio the file reports",
    "verdict.worst": "free-form rows",
    "verdict.seconds": "any number is a duration the file reports",
    "harness": "free text (a version)",
    "campaign": "free text (an id)",
    "verdict.failure": "free text (exception type and frame)",
    "verdict.impl_settings": "free-form adapter settings",
}
# where the message starts when it is not the field's own path (the parent names which field is wrong)
PREFIX = {
    **{f"case.config.{s}.{f}:missing": f"case.config.{s}" for s in ("shrink", "expand") for f in TILE_FIELDS},
    **{f"case.config.{f}:missing": "case.config" for f, *_ in CONFIG},
    "case.config.shrink:type": "case.config",
    "case.config.expand:type": "case.config",
    "schema:type": "schema",
    "version:range": "version",
}


def _rows():
    groups = [
        ("", TOP),
        ("case.", CASE),
        ("case.config.", CONFIG),
        ("case.config.shrink.", TILE),
        ("case.config.expand.", TILE),
        ("verdict.", VERDICT),
    ]
    for prefix, fields in groups:
        for name, wrong, out_of_range in fields:
            path = prefix + name
            yield pytest.param(path, "type", wrong, id=f"{path}-wrong-type")
            yield pytest.param(path, "missing", None, id=f"{path}-missing")
            for i, v in enumerate(out_of_range):
                yield pytest.param(path, "range", v, id=f"{path}-out-of-range-{i}")


ROWS = list(_rows())


def _corrupt(path: str, action: str, value) -> dict:
    d = copy.deepcopy(_base())
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if action == "missing":
        del node[leaf]
    else:
        node[leaf] = value
    return d


@pytest.mark.parametrize("path, action, value", ROWS)
def test_malformed_field_is_refused_naming_it(path, action, value):
    text = json.dumps(_corrupt(path, action, value))
    if action == "missing" and path in OPTIONAL:
        parse(text)  # loads with its default
        return
    prefix = PREFIX.get(f"{path}:{action}", path)
    with pytest.raises(ReproError) as info:
        parse(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert re.match(re.escape(prefix) + r"\b", msg), f"{path} ({action} {value!r}): {msg}"


def test_base_file_loads():
    """The base of every corruption is valid, so each refusal above is the corrupted field's doing."""
    r = parse(json.dumps(_base()))
    assert r.case == BASE and r.impl == "ours" and r.device == "cpu" and r.verdict.kind == "mismatch"


def test_every_field_is_covered():
    """Each field of the schema has a wrong-type row and a missing row, and out-of-range rows unless it has no
    range (NO_RANGE says why)."""
    schema = {f"{k}" for k in _base() if k != "replay"}  # replay is rewritten by save: never read
    schema |= {f"case.{f.name}" for f in dataclasses.fields(Case)}
    schema |= {f"case.config.{f.name}" for f in dataclasses.fields(MoeLoraConfig)}
    schema |= {f"case.config.{s}.{f}" for s in ("shrink", "expand") for f in TILE_FIELDS}
    schema |= {f"verdict.{f.name}" for f in dataclasses.fields(Verdict)}
    verdict_not_stored = {"verdict.features"} - schema  # (every Verdict field is stored today)
    covered = {}
    for p in ROWS:
        path, action, _ = p.values
        covered.setdefault(path, set()).add(action)
    for field_path in sorted(schema | verdict_not_stored):
        actions = covered.get(field_path, set())
        assert {"type", "missing"} <= actions, f"{field_path}: no wrong-type or missing row"
        assert "range" in actions or field_path in NO_RANGE, f"{field_path}: no out-of-range row"
    assert set(covered) <= schema | {"case", "verdict"}, sorted(set(covered) - schema)


def test_replay_line_is_informational():
    """`replay` is rewritten on every save and never read back: a hand-edited one does not matter."""
    d = _base()
    d["replay"] = 42
    assert parse(json.dumps(d)).case == BASE


# the ends of every range load (a bound moved inward is seen; moved outward, the rows above see it)
EDGE_VALUES = [
    ("case.seed", 2**63 - 1),
    ("case.m", 0),
    ("case.m", 65536),
    ("case.top_k", 16),
    ("case.num_experts", 512),
    ("case.num_slots", 64),
    ("case.k_dim", 16384),
    ("case.n_dim", 16384),
    ("case.offset", 1024),
    ("case.extra_cols", 1024),
    ("case.align_slack", 1024),
    ("case.config.block_m", 256),
    *[
        (f"case.config.{s}.{f}", v)
        for s in ("shrink", "expand")
        for f, v in (
            ("block_n", 256),
            ("block_k", 16),
            ("group_size_m", 64),
            ("split_k", 64),
            ("num_warps", 16),
            ("num_warps", 1),
            ("num_stages", 1),
            ("num_stages", 8),
            ("n_tiles", 64),
        )
    ],
]


@pytest.mark.parametrize("path, value", EDGE_VALUES, ids=[f"{p}={v}" for p, v in EDGE_VALUES])
def test_range_ends_load(path, value):
    d = _corrupt(path, "range", value)
    if path == "case.num_slots":
        d["case"]["disabled"] = [63]
    assert parse(json.dumps(d)) is not None


def test_rank_ends_load():
    d = _base()
    d["case"].update(rank=256, real_rank=256)
    assert parse(json.dumps(d)).case.real_rank == 256


@pytest.mark.parametrize(
    "changes, field",
    [
        pytest.param({"routing": "distinct", "top_k": 2}, "case.routing", id="distinct-needs-top_k-le-experts"),
        pytest.param({"real_rank": 3, "rank": 2}, "case.real_rank", id="real_rank-le-rank"),
        pytest.param(
            {"disabled": [0], "num_slots": 1, "slotting": "one_slot", "routing": "distinct", "top_k": 1},
            None,
            id="valid-combination",
        ),
    ],
)
def test_cross_field_rules(changes, field):
    d = _base()
    d["case"].update(changes)
    if field is None:
        assert parse(json.dumps(d)).case.disabled == (0,)
        return
    with pytest.raises(ReproError, match="^" + re.escape(field) + ":"):
        parse(json.dumps(d))


@pytest.mark.parametrize("dtype, split_k, ok", [("bfloat16", 2, False), ("bfloat16", 1, True), ("float16", 2, True)])
def test_interpreter_only_rule(dtype, split_k, ok):
    """bf16 with expand split-K > 1 is valid in general but cannot run under an unpatched interpreter (no bf16
    atomics); the harness's interpreter patch (fuzz.runtime.interpreter) lifts the limit."""
    case = BASE.replace(dtype=dtype, config=MoeLoraConfig(expand=TileConfig(split_k=split_k)))
    case.validate(interpreter=False)
    case.validate(interpreter=True, bf16_atomics=True)
    if ok:
        case.validate(interpreter=True, bf16_atomics=False)
    else:
        with pytest.raises(ValueError, match=r"^case\.config: expand\.split_k > 1 with bfloat16"):
            case.validate(interpreter=True, bf16_atomics=False)
