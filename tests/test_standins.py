"""Real sibling modules first, stand-ins last (fuzz/upstream/standins.py), the harness-error verdict, branch
tracing (fuzz/upstream/trace.py) and the release cache (fuzz/upstream/releases.py). CPU only, our own fakes;
the tests that reach the package index are marked `network` (skipped unless selected: tox -e upstream)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve
from moe_lora_fuzz.fuzz.upstream import load, releases
from moe_lora_fuzz.fuzz.upstream.trace import Tracer, summary, switches

from tests.cases import BASE

ROOT = Path(__file__).resolve().parent.parent
GAP = "vllm:tests/fakes/vllm_standin_gap.py"


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def test_a_standin_gap_at_call_time_is_a_harness_error_not_a_finding(at_root):
    impl = resolve(GAP)  # loading works: the gap is met only in the call
    v = check(BASE, GAP, "cpu", impl=impl)
    assert v.kind == "harness-error", (v.kind, v.message)
    assert "vllm.platforms.current_platform" in v.message and "no_such_query" in v.message
    assert v.family == "harness"


def test_a_standin_gap_stops_the_campaign_with_one_error_line(at_root, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fuzz", "run", "--impl", GAP, "--device", "cpu", "--budget", "60", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1, r.stdout + r.stderr
    assert "harness-error" in errors[0] and "no_such_query" in errors[0]
    report = json.loads((out / "report.json").read_text())
    assert report["findings"] == [] and report["cases"] == 1  # stopped at the first case, nothing recorded
    assert "no_such_query" in report["harness_error"]
    assert not list(out.glob("repro-*"))


def _package(tmp_path: Path, utils: str, kernel: str) -> Path:
    folder = tmp_path / "vllm" / "lora" / "ops" / "triton_ops"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise RuntimeError('the package __init__ must not run')\n")
    (folder / "utils.py").write_text(utils)
    (folder / "op.py").write_text(kernel)
    return folder / "op.py"


KERNEL = """
import functools
from tests.fakes.moe_lora_core import vllm_fused_convention
from .utils import ONLY_THE_REAL_SIBLING_HAS_THIS, supports_pdl

FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}
_correct = vllm_fused_convention(expand_grid_covers_split_k=True)

def _small(*args, **kwargs):
    return _correct(*args, **kwargs)

def _large(*args, **kwargs):
    return _correct(*args, **kwargs)

_SPLIT_MAX_TOKENS = 3

@functools.wraps(_correct)
def _fused_moe_lora(*args, **kwargs):
    if kwargs["topk_weights"].shape[0] <= _SPLIT_MAX_TOKENS:
        return _small(*args, **kwargs)
    return _large(*args, **kwargs)
"""
UTILS = """
from vllm.platforms import current_platform
ONLY_THE_REAL_SIBLING_HAS_THIS = 7
def supports_pdl(device=None):
    return current_platform.is_cuda()
"""


def test_the_real_sibling_module_is_used_and_the_rest_stood_in(at_root, tmp_path):
    adapter = load(f"vllm:{_package(tmp_path, UTILS, KERNEL)}")
    s = adapter.settings
    assert s["package"] == "vllm.lora.ops.triton_ops"  # from the folder, not a fixed table
    # the sibling's own imports were stood in; the sibling itself was not
    assert "vllm.platforms.current_platform" in s["standins"]
    assert not any("ONLY_THE_REAL_SIBLING_HAS_THIS" in n or n.endswith("supports_pdl") for n in s["standins"])
    assert "vllm" not in sys.modules or not hasattr(sys.modules["vllm"], "__fuzz_standin__")


def test_branches_are_traced_from_the_wrapper_code(at_root, tmp_path):
    impl = resolve(f"vllm:{_package(tmp_path, UTILS, KERNEL)}")
    assert impl.settings["branches"] == ["_large", "_small"]  # the host functions _fused_moe_lora names
    assert impl.settings["switches"] == {"m": [3]}  # read from the constant its code names
    seen = {}
    for m in (2, 5):
        v = check(BASE.replace(m=m), impl.name, "cpu", impl=impl)
        assert v.kind == "pass", v.message
        for f in v.features:
            seen[f] = seen.get(f, 0) + 1
    assert "branch:_small" in seen and "branch:_large" in seen
    part = summary(impl.settings, {"branch:_small": 1})
    assert part["missing_edges"] == ["_large"]


def test_tracer_on_a_module_without_the_wrapper_declares_nothing():
    mod = types.ModuleType("m")
    t = Tracer(mod, None)
    assert t.declared == [] and t.features() == [] and switches(mod) == {}


def test_a_cached_release_loads_without_the_network(at_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "vllm-9.9.9"
    kernel = _package(root, UTILS, KERNEL)
    rel = {"framework": "vllm", "version": "9.9.9", "wheel": "x.whl", "kernel": str(kernel.relative_to(root))}
    (root / releases.MANIFEST).write_text(json.dumps(rel))

    def no_network(*_a, **_k):
        raise AssertionError("the network was used although the release is cached")

    monkeypatch.setattr(releases, "_get", no_network)
    adapter = load("vllm==9.9.9")
    assert adapter.settings["release"] == "9.9.9" and adapter.settings["branches"] == ["_large", "_small"]


def test_a_release_that_cannot_be_fetched_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path))
    monkeypatch.setattr(releases, "project_files", lambda fw: [])
    with pytest.raises(ImplError) as e:
        load("vllm==0.0.1")
    assert "\n" not in str(e.value) and "no wheel of that version" in str(e.value)
    with pytest.raises(ImplError) as e:
        load("vllm==not a version")
    assert "expected sglang==VERSION, vllm==VERSION or vllm-fp8==VERSION" in str(e.value)


@pytest.mark.network
@pytest.mark.parametrize("spec", ["vllm==0.34.0", "sglang==0.5.23"])
def test_a_release_is_fetched_by_range_requests_and_loads(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path))
    adapter = load(spec)
    assert adapter.settings["branches"] and "_fused_moe_lora_shrink" in adapter.settings["branches"]
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) < 1_000_000


INSTALLED_KERNEL = """
import functools

import triton
from tests.fakes.moe_lora_core import vllm_fused_convention

FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}


@triton.jit
def _unused_kernel(x_ptr):
    pass


_correct = vllm_fused_convention(expand_grid_covers_split_k=True)


@functools.wraps(_correct)
def _fused_moe_lora(*args, **kwargs):
    return _correct(*args, **kwargs)
"""


def test_the_installed_package_kernel_is_found_by_what_it_defines(at_root, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "vllm"
    (pkg / "somewhere" / "moved").mkdir(parents=True)  # not the path of any release: found by its content
    for d in (pkg, pkg / "somewhere", pkg / "somewhere" / "moved"):
        (d / "__init__.py").write_text("")
    (pkg / "somewhere" / "moved" / "moe_lora_helpers.py").write_text("def _fused_moe_lora_align():\n    pass\n")
    (pkg / "somewhere" / "moved" / "fused_moe_lora_thing.py").write_text(INSTALLED_KERNEL)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    adapter = load("vllm")
    assert adapter.settings["source"] == "vllm.somewhere.moved.fused_moe_lora_thing"
    assert adapter.settings["standins"] == []  # the real framework: nothing stood in
    v = check(BASE, "vllm", "cpu", impl=resolve("vllm"))
    assert v.kind == "pass", v.message


def test_campaign_cases_cross_every_switch_of_the_wrapper(monkeypatch):
    from moe_lora_fuzz.fuzz.targets.impls import ImplProfile
    from moe_lora_fuzz.fuzz.upstream.conventions import naive_block_assignment

    profile = ImplProfile(takes_config=True, settings={"switches": {"m": [64], "rank": [128], "naive": [8]}})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # compiled kernels: the rank switch too
    base = BASE.replace(num_experts=8, num_slots=4)  # E*L = 32: room for a few routed pairs under naive
    cases = [profile.fit(base.replace(seed=s)) for s in range(64)]
    ms = {c.m for c in cases}
    assert {64, 65} <= ms and base.m in ms  # both sides of the token switch, and most cases untouched
    assert any(c.rank == 128 for c in cases) and any(128 < c.rank <= 256 for c in cases)
    naive = [c for c in cases if naive_block_assignment(c.m, c.top_k, c.num_experts, c.num_slots, False)]
    assert any(c.m > 64 for c in naive) and any(c.m <= 64 for c in naive)
    assert all(c.offset == 0 for c in cases if c.m in (64, 65) or c.rank >= 128)  # not a fully sharded call
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # under the interpreter no rank past the generator's sizes
    assert all(profile.fit(BASE.replace(seed=s)).rank <= BASE.rank for s in range(64))


def test_the_standin_policy_answers_by_name_and_names_every_gap(monkeypatch):
    import torch
    from moe_lora_fuzz.fuzz.upstream.standins import StandInGap, answer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    got = {n: answer("sglang.srt.utils.common", n)() for n in ("is_sm90_supported", "is_sm100_supported")}
    assert got == {"is_sm90_supported": True, "is_sm100_supported": False}
    assert answer("vllm.lora.ops.triton_ops.utils", "supports_tma")(0) is True
    assert answer("vllm.envs", "VLLM_LORA_DISABLE_PDL") is None  # a setting: unset
    t = torch.arange(3)
    assert answer("anywhere", "tensor_model_parallel_all_reduce")(t) is t  # one rank
    with pytest.raises(StandInGap) as e:
        answer("vllm.utils.mem_utils", "some_new_helper")
    assert (e.value.module, e.value.attr) == ("vllm.utils.mem_utils", "some_new_helper")
    assert "harness gap" in str(e.value)
    with pytest.raises(AttributeError) as e:
        answer("vllm.utils", "__file__")  # what importlib and inspect probe is never a gap
    assert not isinstance(e.value, StandInGap)


def _wheel(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("vllm/__init__.py", "raise RuntimeError('never imported')\n")
        z.writestr("vllm/lora/ops/triton_ops/__init__.py", "raise RuntimeError('never run')\n")
        z.writestr("vllm/lora/ops/triton_ops/utils.py", UTILS)
        z.writestr("vllm/lora/ops/triton_ops/fused_moe_lora_op.py", KERNEL + "\n# @triton.jit\n")
        z.writestr("vllm/lora/ops/triton_ops/moe_lora_notes.py", "def _fused_moe_lora_helper():\n    pass\n")
        z.writestr("vllm/model_executor/big.bin", b"\0" * 300_000)  # not the kernel's folder: never kept
    return path


class _Server:
    """A local file server; `ranges` says whether it answers HTTP range requests (206) or the whole file."""

    def __init__(self, root: Path, ranges: bool):
        import http.server
        import threading

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def log_message(self, *_a):
                pass

            def do_GET(self):
                spec = self.headers.get("Range")
                if not (ranges and spec):
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                lo, hi = (int(x) for x in spec.split("=")[1].split("-"))
                self.send_response(206)
                self.send_header("Content-Length", str(hi - lo + 1))
                self.end_headers()
                self.wfile.write(data[lo : hi + 1])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.mark.parametrize("ranges", [True, False], ids=["range-requests", "whole-wheel-fallback"])
def test_a_release_is_read_from_its_wheel_and_only_the_kernel_folder_kept(ranges, at_root, tmp_path, monkeypatch):
    wheel = _wheel(tmp_path / "vllm-9.9.8-py3-none-any.whl")
    server = _Server(tmp_path, ranges)
    try:
        entry = {"filename": wheel.name, "url": f"{server.url}/{wheel.name}", "size": wheel.stat().st_size}
        monkeypatch.setattr(releases, "project_files", lambda fw: [entry])
        (tmp_path / "dl").mkdir()  # pip download's own temporary folder (removed after use)
        monkeypatch.setattr(releases, "_pip_download", lambda fw, v: Path(shutil.copy(wheel, tmp_path / "dl")))
        monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path / "cache"))
        rel = releases.fetch("vllm", "9.9.8")
    finally:
        server.httpd.shutdown()
    assert (tmp_path / "dl").exists() == ranges  # without range requests the whole wheel was fetched (and removed)
    assert rel.kernel.name == "fused_moe_lora_op.py" and rel.package_name() == "vllm.lora.ops.triton_ops"
    kept = sorted(p.relative_to(rel.root).as_posix() for p in rel.root.rglob("*") if p.is_file())
    folder = "vllm/lora/ops/triton_ops/"
    names = ["__init__.py", "fused_moe_lora_op.py", "moe_lora_notes.py", "utils.py"]
    assert kept == sorted([releases.MANIFEST] + [folder + n for n in names])
    assert load("vllm==9.9.8").settings["branches"] == ["_large", "_small"]


@pytest.mark.network
def test_the_release_before_an_upstream_fix_fails_and_the_fixed_one_passes(tmp_path, monkeypatch):
    """vLLM 0.14.0 launches max_loras programs over lora_ids that start with -1 when base-model tokens are
    present, so the last slot is never computed; 0.15.0 launches max_loras + 1 (vLLM issue #32235)."""
    monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path))
    case = BASE.replace(slotting="all_with_base", m=16, dtype="float32", offset=0, extra_cols=0, num_slots=2)
    kinds = {}
    for spec in ("vllm==0.14.0", "vllm==0.15.0"):
        impl = resolve(spec)
        kinds[spec] = check(impl.fit(case), spec, "cpu", impl=impl).kind
    assert kinds == {"vllm==0.14.0": "mismatch", "vllm==0.15.0": "pass"}


@pytest.mark.network
def test_the_fp16_operands_cast_to_bf16_before_vllm_0_33_is_caught(tmp_path, monkeypatch):
    """vLLM 0.29.0-0.32.0's two-stage kernel casts both tl.dot operands to bfloat16, fp16 inputs included;
    0.33.0 casts to the input dtype. Found by the compatibility matrix (docs/upstream.md). The column offset
    makes it a fully sharded call, which takes the two-stage path."""
    monkeypatch.setenv("MOE_LORA_FUZZ_CACHE", str(tmp_path))
    case = BASE.replace(dtype="float16", offset=8, extra_cols=0, m=16)
    kinds = {}
    for spec in ("vllm==0.32.0", "vllm==0.33.0"):
        impl = resolve(spec)
        kinds[spec] = check(impl.fit(case), spec, "cpu", impl=impl).kind
        assert "branch:_fused_moe_lora_shrink" in impl.trace()
    assert kinds == {"vllm==0.32.0": "mismatch", "vllm==0.33.0": "pass"}
