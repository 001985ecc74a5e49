"""Knobs are described once (contract.Knob on the dataclass field): the minimiser's lists, coverage's counted knobs
and the GPU configuration pool follow the fields with no other edit. The strongest check adds a knob to a copy
of the sources and runs the minimiser and coverage on it in a fresh interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from moe_lora_fuzz.contract import MoeLoraConfig, knobs_of
from moe_lora_fuzz.fuzz.records.repro import VERSION, add_config_fields
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import Coverage
from moe_lora_fuzz.fuzz.space.generate import GPU_SIZES, _pool
from moe_lora_fuzz.fuzz.triage import minimize

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "kernels", "reference", "fuzz", "moe_lora_fuzz")

# Run in the patched copy: a Case with widgets=40 minimised under "fails while widgets >= 7", a config whose
# new tile field is off its default minimised under "always fails", coverage of both, the pool, and the stored
# schema-v1 repro file loaded through the new migration step.
PROBE = """
import json, sys
from moe_lora_fuzz.contract import MoeLoraConfig, TileConfig
from moe_lora_fuzz.fuzz.records import repro
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.coverage import Coverage
from moe_lora_fuzz.fuzz.space.generate import _pool
from moe_lora_fuzz.fuzz.triage.minimize import minimize

start = Case(m=5, rank=8, real_rank=3, widgets=40)
wide = minimize(start, lambda c: c.widgets >= 7, budget=30)
cfg = MoeLoraConfig(expand=TileConfig(lanes=3))
lanes = minimize(Case(config=cfg), lambda c: True, budget=30)
cov = Coverage()
cov.add(start.replace(config=cfg), [])
try:
    Case(widgets=0).validate()
    refused = ""
except ValueError as e:
    refused = str(e)
old = repro.load(sys.argv[1]).case
print(json.dumps({
    "old_file": [old.widgets, old.config.shrink.lanes, old.config.expand.lanes, old.config.expand.split_k],
    "widgets": wide.case.widgets, "rest_simplest": wide.case == Case(widgets=7), "one_minimal": wide.one_minimal,
    "lanes": lanes.case.config.expand.lanes,
    "counted": {k: v for k, v in cov.to_dict()["knobs"].items() if k in ("widgets", "expand.lanes")},
    "refused": refused,
    "pool": [c.to_dict() for c in _pool()],
}))
"""


CASE_KNOB = "    align_slack: int = knob(0, _size(0, 1024))\n"
TILE_KNOB = "    split_k: int = knob(1, Knob.integer(1, 64))\n"  # mid-class: positional pool rows would shift
MIGRATIONS = "MIGRATIONS: dict[int, Callable[[dict], dict]] = {  # version n -> n + 1\n"
STEP = "lambda d: add_config_fields('shrink.lanes', 'expand.lanes')(add_case_fields(widgets=1)(d))"
EDITS = (  # (file, text, replacement): the whole change a new knob in each dataclass needs
    ("fuzz/space/case.py", CASE_KNOB, CASE_KNOB + "    widgets: int = knob(1, _size(1, 64))\n"),
    ("contract/launch.py", TILE_KNOB, TILE_KNOB + "    lanes: int = knob(1, Knob.integer(1, 8))\n"),
    ("fuzz/records/repro.py", f"VERSION = {VERSION}\n", f"VERSION = {VERSION + 1}\n"),
    ("fuzz/records/repro.py", MIGRATIONS, MIGRATIONS + f"    {VERSION}: {STEP},\n"),
)


def _patched_copy(dst: Path) -> None:
    """The sources with EDITS applied, nothing else."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, old, new in EDITS:
        path = dst / rel
        text = path.read_text()
        assert text.count(old) == 1, (rel, old)
        path.write_text(text.replace(old, new))


def test_a_new_knob_is_minimised_counted_and_validated_with_no_other_edit(tmp_path):
    _patched_copy(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "tests/data/repro-v1.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=None,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["widgets"] == 7 and got["rest_simplest"] and got["one_minimal"], got
    assert got["lanes"] == 1, got  # the new tile field went back to its default
    assert got["counted"] == {"widgets": {"32-63": 1}, "expand.lanes": {"3": 1}}, got
    assert got["refused"].startswith("case.widgets: must lie in [1, 64]"), got
    assert got["old_file"] == [1, 1, 1, 2], got  # the stored v1 file loads, new knobs at their neutral value
    # the pool is unchanged: the same configurations, the new tile field at its default
    for patched, ours in zip(got["pool"], _pool(), strict=True):
        for stage in MoeLoraConfig.STAGES:
            assert patched[stage].pop("lanes") == 1
        assert patched == ours.to_dict()


def test_minimiser_lists_follow_the_knob_metadata():
    knobs, simplest = knobs_of(Case), Case()
    sizes = {n for n, k in knobs.items() if k.kind in ("int", "pow2")} - {"seed"}
    assert set(minimize.SIZE_FLOORS) == sizes
    assert all(minimize.SIZE_FLOORS[n] == getattr(simplest, n) for n in sizes)
    assert knobs["m"].lo == 0 and minimize.SIZE_FLOORS["m"] == 1  # an empty batch is an edge, not simpler
    assert minimize.RESET_KNOBS == ("seed",)  # a smaller seed is not a simpler one
    assert set(minimize.FLAG_KNOBS) == {"mul_routed_weight", "strided"}
    assert set(minimize.OPTION_KNOBS) == {"dtype", "layout", "routing", "slotting", "quant", "quant_group", "act_scale"}
    assert minimize.CONFIG_KNOBS == ("block_m", "align")


def test_seed_is_only_reset_and_m_never_goes_below_one():
    c = Case(seed=1000, m=9)
    cands = list(minimize.candidates(c))
    assert sorted({x.seed for x in cands}) == [0, 1000]  # neither halved nor stepped
    assert min(x.m for x in cands) == 1


def test_coverage_counts_every_knob_but_the_seed():
    cov = Coverage()
    cov.add(Case(seed=12345, m=5, disabled=()), [])
    counted = set(cov.to_dict()["knobs"])
    case_knobs = set(knobs_of(Case)) - {"seed", "config"}
    assert case_knobs <= counted and "seed" not in counted
    assert set(MoeLoraConfig().flat()) <= counted  # block_m, align, shrink.*, expand.* (n_tiles included)


def test_gpu_pool_is_twelve_distinct_valid_configurations():
    pool = _pool()
    assert GPU_SIZES.config_pool == pool and len(pool) == len(set(pool)) == 12
    for cfg in pool:
        cfg.validate()
    # every block size, split-K on both stages, several warps, stages and n_tiles appear
    flat = [c.flat() for c in pool]
    assert {f["block_m"] for f in flat} == {16, 32, 64}
    assert any(f["shrink.split_k"] > 1 for f in flat) and any(f["expand.split_k"] > 1 for f in flat)
    assert len({f["expand.n_tiles"] for f in flat}) > 2


def test_config_migration_names_known_knobs_and_fills_only_missing_ones():
    with pytest.raises(ValueError, match=r"^add_config_fields: unknown launch-configuration knob 'expand\.lanes'$"):
        add_config_fields("expand.lanes")
    d = {"case": {"config": {"block_m": 32, "shrink": {"split_k": 3}, "expand": {}}}}
    add_config_fields("block_m", "shrink.split_k", "expand.n_tiles")(d)
    assert d["case"]["config"] == {"block_m": 32, "shrink": {"split_k": 3}, "expand": {"n_tiles": 1}}
