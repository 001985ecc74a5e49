"""External implementations through the adapter protocol (fuzz.targets.impls) and the wrappers of fuzz.adapters.

CPU only and fast: plain-torch implementations (tests/example_impl.py), tiny cases, short CLI campaigns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from moe_lora_fuzz.fuzz.adapters import from_fused, from_shrink_expand
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, RandomSource, generate
from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig, padded_length

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "tests/example_impl.py"
SEEDS = range(8)

# every pair active (no base tokens, nothing disabled) and the routed weight on: w**2 != w everywhere
ROUTED = Case(
    seed=3,
    dtype="float32",
    m=4,
    top_k=2,
    num_experts=3,
    num_slots=2,
    rank=4,
    real_rank=4,
    k_dim=16,
    n_dim=8,
    num_slices=1,
    layout="per_routed",
    mul_routed_weight=True,
    slotting="no_base",
    config=MoeLoraConfig(block_m=16, shrink=TileConfig(16, 16), expand=TileConfig(16, 16)),
)


@pytest.fixture
def at_root(monkeypatch):
    """The implementation names are paths relative to the repository root."""
    monkeypatch.chdir(ROOT)


def _cases():
    return [generate(RandomSource(i), CPU_SIZES, interpreter=True, seed=i) for i in SEEDS]


# ---- (a), (c): correct implementations pass the oracle -----------------------------------------------
@pytest.mark.parametrize("func", ["torch_moe_lora", "fused_example", "shrink_expand_example"])
def test_example_passes_generated_cases(func, at_root):
    for case in _cases():
        v = check(case, f"{EXAMPLE}:{func}", "cpu", metamorphic=case.seed % 2 == 0)
        assert v.kind == "pass", f"seed {case.seed}: {v.kind}: {v.message}\n{case}"


@pytest.mark.parametrize("func", ["torch_moe_lora", "fused_example", "shrink_expand_example"])
@pytest.mark.parametrize(
    "edit",
    [
        dict(),
        dict(layout="per_token"),
        dict(mul_routed_weight=False),
        dict(dtype="float16", strided=True),
        dict(dtype="bfloat16", offset=3, extra_cols=2, num_slices=2),
        dict(m=0),
        dict(m=9, slotting="all_with_base", disabled=(1,)),
        dict(top_k=1, routing="one_hot", align_slack=2),
    ],
    ids=[
        "base",
        "per-token",
        "no-mrw",
        "fp16-strided",
        "bf16-offset-2slices",
        "empty",
        "base+disabled",
        "k1-one-expert",
    ],
)
def test_example_passes_edge_cases(func, edit, at_root):
    case = ROUTED.replace(**edit).validate(interpreter=True)
    v = check(case, f"{EXAMPLE}:{func}", "cpu")
    assert v.kind == "pass", f"{v.kind}: {v.message}\n{case}"


# ---- (b): the seeded bug is caught where it must trigger -----------------------------------------------
def test_buggy_example_is_caught(at_root):
    v = check(ROUTED, f"{EXAMPLE}:torch_moe_lora_buggy", "cpu")
    assert v.kind == "mismatch", f"{v.kind}: {v.message}"
    assert v.max_ratio > 10
    # ... and it is the one deviation: without the routed weight the buggy variant is correct
    clean = check(ROUTED.replace(mul_routed_weight=False), f"{EXAMPLE}:torch_moe_lora_buggy", "cpu")
    assert clean.kind == "pass", f"{clean.kind}: {clean.message}"


def test_adapters_do_not_hide_a_bug_of_the_wrapped_code():
    """Shrink and expand that both skip the adapter_enabled check are still caught through the wrapper."""
    from tests.example_impl import torch_expand, torch_shrink

    def shrink_all(intermediate, x, lora_a, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, block_m):
        torch_shrink(
            intermediate, x, lora_a, sorted_ids, expert_ids, ntp, top_k, lora_ids, torch.ones_like(enabled), block_m
        )

    def expand_all(y, intermediate, lora_b, w, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, *rest):
        torch_expand(
            y, intermediate, lora_b, w, sorted_ids, expert_ids, ntp, top_k, lora_ids, torch.ones_like(enabled), *rest
        )

    impl = from_shrink_expand(shrink_all, expand_all, block_size_m=16)  # legacy mode: positional block_size_m
    v = check(ROUTED.replace(disabled=(0,)), "ignores-adapter-enabled", "cpu", impl=lambda t: impl(**t.op_kwargs()))
    assert v.kind == "untouched-changed", f"{v.kind}: {v.message}"


# ---- the wrappers hand over exactly what their docstrings promise --------------------------------------
def test_from_fused_passes_the_documented_arguments():
    t = materialize(ROUTED.replace(num_slices=2, num_slots=3, offset=2), "cpu")
    seen = {}

    def fused(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    from_fused(fused, block_size_m=32, split_k=2)(**t.op_kwargs())
    (y, x, la, lb, w, sorted_ids, expert_ids, ntp, rank, top_k, lora_ids, enabled, bm, mrw, offset) = seen["args"]
    assert seen["kwargs"] == {"split_k": 2}
    assert y is t.out and x is t.x and w is t.topk_weights and enabled is t.adapter_enabled
    assert isinstance(la, tuple) and all(a is b for a, b in zip(la, t.lora_a, strict=True))
    assert isinstance(lb, tuple) and all(a is b for a, b in zip(lb, t.lora_b, strict=True))
    p = padded_length(ROUTED.m * ROUTED.top_k, ROUTED.num_experts, 32)
    assert sorted_ids.shape == (3, p) and expert_ids.shape == (3, p // 32) and ntp.shape == (3,)
    assert (rank, top_k, bm, mrw, offset) == (ROUTED.rank, ROUTED.top_k, 32, True, 2)
    assert lora_ids.tolist() == [-1, 0, 1, 2] and lora_ids.dtype == torch.int32


def test_from_shrink_expand_allocates_one_zeroed_intermediate_and_aligns_once():
    t = materialize(ROUTED.replace(num_slices=2), "cpu")
    seen = {}

    def shrink(intermediate, x, la, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, bm, **kw):
        seen["shrink"] = (intermediate, sorted_ids, kw)
        assert bool((intermediate == 0).all())

    def expand(y, intermediate, lb, w, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, bm, mrw, offset, **kw):
        seen["expand"] = (intermediate, sorted_ids, kw)
        assert y is t.out and (top_k, bm, mrw, offset) == (ROUTED.top_k, 16, True, 0)

    from_shrink_expand(
        shrink, expand, block_size_m=16, intermediate_dtype=None, shrink_kwargs={"a": 1}, expand_kwargs={"b": 2}
    )(**t.op_kwargs())
    (i1, s1, kw1), (i2, s2, kw2) = seen["shrink"], seen["expand"]
    assert i1 is i2 and s1 is s2 and kw1 == {"a": 1} and kw2 == {"b": 2}
    assert i1.shape == (2, ROUTED.m * ROUTED.top_k, ROUTED.rank) and i1.dtype == t.x.dtype


# ---- (d), (e): the CLI -------------------------------------------------------------------------------
# Each CLI call imports torch (seconds on a CI core) and a campaign spawns a worker that imports it again, so
# the calls are started together once per module and each test reads its own result.
RAISING = "def f(**kwargs):\n    raise RuntimeError('kernel launch failed')\n"
BROKEN = "import torch\nraise ImportError('no such backend: fancy_kernels')\n\n\ndef f(**kwargs):\n    pass\n"
POSITIONAL = "def f(out, x, topk_ids):\n    out.add_(0)\n"


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    out: Path  # the campaign's --out folder

    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cli")
    for name, text in (("raising_impl.py", RAISING), ("broken_impl.py", BROKEN), ("positional_impl.py", POSITIONAL)):
        (tmp / name).write_text(text)
    runs = {  # name -> (--impl, extra arguments)
        # --max-cases keeps it short: the routed-weight bug first shows at case 7 of seed 0's stream
        "buggy": (f"{EXAMPLE}:torch_moe_lora_buggy", ("--budget", "30", "--max-cases", "10")),
        "correct": (f"{EXAMPLE}:torch_moe_lora", ("--max-cases", "15")),
        "raising": (f"{tmp / 'raising_impl.py'}:f", ("--max-cases", "3")),
        "broken-file": (f"{tmp / 'broken_impl.py'}:f", ()),
        "no-function": (f"{EXAMPLE}:no_such_function", ()),
        "positional": (f"{tmp / 'positional_impl.py'}:f", ()),
    }
    env = dict(os.environ, OMP_NUM_THREADS="1")  # many small processes share the cores
    procs = {}
    for name, (impl, extra) in runs.items():
        out = tmp / f"out-{name}"
        logs = (open(tmp / f"{name}.stdout", "w"), open(tmp / f"{name}.stderr", "w"))
        cmd = [sys.executable, "-m", "fuzz", "run", "--impl", impl, "--device", "cpu", "--out", str(out), *extra]
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logs[0], stderr=logs[1]), out, logs)
    results = {}
    for name, (proc, out, logs) in procs.items():
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        for f in logs:
            f.close()
        results[name] = Ran(rc, (tmp / f"{name}.stdout").read_text(), (tmp / f"{name}.stderr").read_text(), out)
    return results


def test_cli_buggy_example_exits_1(cli):
    r = cli["buggy"]
    assert r.returncode == 1, r.stdout + r.stderr
    kinds = {f["kind"] for f in r.report()["findings"]}
    assert kinds == {"mismatch"}, kinds


def test_cli_correct_example_exits_0(cli):
    r = cli["correct"]
    assert r.returncode == 0, r.stdout + r.stderr
    report = r.report()
    assert report["cases"] == 15 and report["findings"] == []


def _assert_usage_error(r: Ran, *needles: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (r.out / "report.json").exists()  # refused before any campaign started


def test_cli_import_failure_is_a_usage_error(cli):
    _assert_usage_error(cli["broken-file"], "cannot import", "ImportError: no such backend")
    # the module:function form goes through the same resolver (checked in-process: no extra torch import)
    with pytest.raises(ImplError, match="cannot import no_such_module_for_fuzz_tests: ModuleNotFoundError"):
        resolve("no_such_module_for_fuzz_tests:f")


def test_cli_missing_function_is_a_usage_error(cli):
    _assert_usage_error(cli["no-function"], "no callable 'no_such_function'")


def test_cli_wrong_signature_is_a_usage_error(cli):
    _assert_usage_error(cli["positional"], "signature does not accept the adapter keywords")


def test_cli_raising_implementation_is_an_exception_finding(cli):
    r = cli["raising"]
    assert r.returncode == 1, r.stdout + r.stderr
    report = r.report()
    assert report["cases"] == 3 and report["kinds"] == {"exception": 3} and report["worker_restarts"] == 0
    assert {f["kind"] for f in report["findings"]} == {"exception"}
    assert "RuntimeError: kernel launch failed" in report["findings"][0]["message"]
