"""Named adapters for the SGLang and vLLM conventions (fuzz.upstream), configuration forwarding (fuzz.adapters).

CPU only. The kernels are our own fakes in those conventions (tests/fakes/), never upstream code: a correct one
and one whose expand grid is not multiplied by split_k, per convention, plus `triton_fused_example[_buggy]`
(tests/example_impl.py) behind from_fused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from moe_lora_fuzz.fuzz.adapters import from_fused, from_shrink_expand, fused_config_kwargs, stage_args, takes_config
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, case_for, run_campaign
from moe_lora_fuzz.fuzz.data.tensors import materialize
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve, wrap
from moe_lora_fuzz.fuzz.upstream import conventions, is_upstream, load
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig, padded_length

from tests.fakes import recording

# Our fakes are Triton kernels run on CPU tensors under the interpreter (the GPU campaigns of the named
# adapters run through the CLI: scripts/gpu_round.sh adapters).
pytestmark = pytest.mark.interpreter

ROOT = Path(__file__).resolve().parent.parent
FAKES = "tests/fakes"
SGLANG, SGLANG_BUGGY = f"sglang:{FAKES}/sglang_fused_moe_lora.py", f"sglang:{FAKES}/sglang_fused_moe_lora_buggy.py"
VLLM, VLLM_BUGGY = f"vllm:{FAKES}/vllm_fused_moe_lora.py", f"vllm:{FAKES}/vllm_fused_moe_lora_buggy.py"
FUSED, FUSED_BUGGY = "tests/example_impl.py:triton_fused_example", "tests/example_impl.py:triton_fused_example_buggy"

# every stage knob distinct, so a value forwarded to the wrong argument shows
CONFIG = MoeLoraConfig(
    block_m=32,
    shrink=TileConfig(block_n=16, block_k=64, group_size_m=2, split_k=3, num_warps=2, num_stages=1),
    expand=TileConfig(block_n=32, block_k=16, group_size_m=4, split_k=2, num_warps=8, num_stages=3),
)
# every pair of a slot active, routed weight, two slices, an offset, strided views; expand split-K 2 with R > 16
SPLIT = Case(
    seed=3,
    dtype="float16",
    m=9,
    top_k=2,
    num_experts=2,
    num_slots=2,
    rank=20,
    real_rank=20,
    k_dim=40,
    n_dim=24,
    num_slices=2,
    layout="per_token",
    mul_routed_weight=True,
    slotting="all_with_base",
    offset=2,
    extra_cols=1,
    strided=True,
    config=MoeLoraConfig(block_m=16, shrink=TileConfig(16, 16, split_k=2), expand=TileConfig(16, 16, split_k=2)),
)


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _with_config(adapter, name: str = "adapter"):
    """The adapter as the fuzzer drives it (fuzz.targets.impls.wrap: the launch configuration passed, capabilities
    read)."""
    return wrap(name, adapter)


def _framework_modules() -> dict:
    return {n: m for n, m in sys.modules.items() if n.split(".")[0] in ("sglang", "sgl_kernel", "vllm")}


# ---- names and loading --------------------------------------------------------------------------------
def test_names_are_recognised():
    assert all(is_upstream(n) for n in ("sglang", "vllm", SGLANG, VLLM))
    assert not any(
        is_upstream(n) for n in ("ours", "tests/example_impl.py:torch_moe_lora", "sglang_x:f", "vllm:some_function")
    )


@pytest.mark.parametrize(
    "name, convention, alignment", [(SGLANG, "sglang", None), (VLLM, "vllm", 16)], ids=["sglang", "vllm"]
)
def test_load_by_path(name, convention, alignment, at_root):
    adapter = load(name)
    assert takes_config(adapter)
    # the convention's declaration, overridden by the fake's FUZZ_CAPABILITIES (it multiplies in IEEE fp32)
    assert adapter.capabilities["fp32_precision"] == "ieee"
    assert adapter.capabilities.get("alignment") == alignment
    assert adapter.settings["convention"] == convention and adapter.settings["source"].endswith(".py")
    json.dumps(adapter.settings)  # a repro can store it
    assert callable(resolve(name))  # and the CLI's resolver takes the same name


def test_standins_are_installed_only_while_the_file_is_imported(at_root, monkeypatch):
    sentinel = types.ModuleType("vllm")  # stands for a real installation that must survive untouched
    monkeypatch.setitem(sys.modules, "vllm", sentinel)
    before = _framework_modules()
    load(VLLM)  # imports vllm.distributed, .platforms, .triton_utils, .utils.torch_utils and .utils: the
    # sentinel has none of them, so the import worked only because the stand-ins answered while it ran
    assert _framework_modules() == before and sys.modules["vllm"] is sentinel
    assert "vllm.lora.ops.triton_ops.vllm_fused_moe_lora" not in sys.modules
    # ... and a file that fails to import restores sys.modules too
    with pytest.raises(ImplError):
        load(f"vllm:{FAKES}/does_not_exist.py")
    assert _framework_modules() == before


def test_missing_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sglang" else real(name, *a))
    with pytest.raises(ImplError) as e:
        load("sglang")
    msg = str(e.value)
    assert "\n" not in msg and "sglang is not installed" in msg
    assert "--impl sglang==VERSION" in msg


BAD_FILES = {  # file text -> what the one-line error must say
    # a stand-in gap (a name no policy of fuzz/upstream/standins.py answers) names module and attribute
    "from vllm.model_executor.layers import nothing\nnothing()\n": (
        "stand-in vllm.model_executor.layers has no 'nothing'"
    ),
    "from vllm.distributed import no_such_collective\nno_such_collective(1)\n": (
        "stand-in vllm.distributed has no 'no_such_collective'"
    ),
    "from vllm.platforms import current_platform\ncurrent_platform.no_such_query()\n": (
        "stand-in vllm.platforms.current_platform has no 'no_such_query'"
    ),
    "def _fused_moe_lora(:\n": "SyntaxError",
    "x = 1\n": "has no function _fused_moe_lora",
    "def _fused_moe_lora(output, qcurr_hidden_states, expert_ids):\n    pass\n": "takes no lora_ids",
    "def _fused_moe_lora(output, lora_ids, page_table):\n    pass\n": "does not know: page_table",
}


@pytest.mark.parametrize(
    "text",
    list(BAD_FILES),
    ids=[
        "unstood-module",
        "missing-standin-name",
        "missing-platform-query",
        "syntax",
        "no-function",
        "virtual-experts",
        "unknown-parameter",
    ],
)
def test_bad_kernel_file_is_one_line(text, tmp_path):
    path = tmp_path / "kernel.py"
    path.write_text(text)
    before = _framework_modules()
    with pytest.raises(ImplError) as e:
        load(f"vllm:{path}")
    assert "\n" not in str(e.value) and BAD_FILES[text] in str(e.value), str(e.value)
    assert _framework_modules() == before


def test_cli_refuses_an_unloadable_kernel_with_one_line(at_root, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            "run",
            "--impl",
            f"sglang:{FAKES}/no_such_kernel.py",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    assert "no_such_kernel.py not found" in lines[0] and not (out / "report.json").exists()


def test_list_mentions_the_upstream_names(capsys):
    from moe_lora_fuzz.fuzz.cli import main

    assert main(["list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"sglang", "vllm", "sglang:path/to/fused_moe_lora_kernel.py"} <= listed


# ---- configuration forwarding --------------------------------------------------------------------------
def _recorded(adapter, case: Case, config):
    recording.CALLS.clear()
    t = materialize(case, "cpu")
    adapter(**t.op_kwargs(), **({} if config is None else {"config": config}))
    (call,) = recording.CALLS
    return t, call


def test_stage_args_follow_upstream_order():
    assert list(stage_args(CONFIG, "expand")) == [
        "block_size_m",
        "block_size_n",
        "block_size_k",
        "group_size_m",
        "num_warps",
        "num_stages",
        "split_k",
    ]
    assert stage_args(CONFIG, "shrink") == dict(
        block_size_m=32, block_size_n=16, block_size_k=64, group_size_m=2, num_warps=2, num_stages=1, split_k=3
    )
    assert fused_config_kwargs(CONFIG)["expand_split_k"] == 2 and len(fused_config_kwargs(CONFIG)) == 14


def test_from_fused_forwards_the_case_configuration():
    adapter = from_fused(recording.record_fused)
    assert takes_config(adapter) and adapter.settings["mode"] == "config"
    t, call = _recorded(adapter, SPLIT, CONFIG)
    args, kw = call["args"], call["kwargs"]
    assert len(args) == 12 and args[0] is t.out and isinstance(args[2], list)
    assert kw == {**fused_config_kwargs(CONFIG), "mul_routed_weight": True, "offset": 2}
    p = padded_length(SPLIT.m * SPLIT.top_k, SPLIT.num_experts, CONFIG.block_m)  # align ran with config.block_m
    assert args[5].shape == (SPLIT.num_slots, p) and args[6].shape == (SPLIT.num_slots, p // CONFIG.block_m)
    # without a configuration, the default one
    _t, call = _recorded(adapter, SPLIT, None)
    assert call["kwargs"]["shrink_block_size_m"] == MoeLoraConfig().block_m


def test_from_shrink_expand_forwards_each_stage():
    def shrink(intermediate, x, la, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, **kw):
        recording.CALLS.append({"shrink": kw, "p": sorted_ids.shape[1]})

    def expand(y, intermediate, lb, w, sorted_ids, expert_ids, ntp, top_k, lora_ids, enabled, **kw):
        recording.CALLS[-1]["expand"] = kw

    _t, call = _recorded(from_shrink_expand(shrink, expand), SPLIT, CONFIG)
    assert call["shrink"] == stage_args(CONFIG, "shrink")
    assert call["expand"] == {**stage_args(CONFIG, "expand"), "mul_routed_weight": True, "offset": 2}
    assert call["p"] == padded_length(SPLIT.m * SPLIT.top_k, SPLIT.num_experts, CONFIG.block_m)


def test_legacy_mode_is_unchanged():
    adapter = from_fused(recording.record_fused, block_size_m=32, split_k=2)
    assert not takes_config(adapter) and adapter.settings == {
        "adapter": "from_fused",
        "fn": "record_fused",
        "mode": "legacy",
        "block_size_m": 32,
        "lora_ids": "_default_lora_ids",
        "fn_kwargs": {"split_k": 2},
    }
    _t, call = _recorded(adapter, SPLIT, None)
    assert len(call["args"]) == 15 and call["args"][12] == 32 and call["kwargs"] == {"split_k": 2}


def test_sglang_convention_arguments():
    module = types.SimpleNamespace(_fused_moe_lora=recording.record_fused)
    adapter = conventions.sglang_adapter(module, "recording")
    assert adapter.capabilities == {"fp32_precision": "tf32"}
    _t, call = _recorded(adapter, SPLIT, CONFIG)
    assert call["args"][10].tolist() == list(range(SPLIT.num_slots))  # lora_ids = arange(L)
    assert call["kwargs"]["expand_split_k"] == 2 and call["kwargs"]["shrink_block_size_m"] == 32
    _t, call = _recorded(adapter, SPLIT, None)  # SGLang's own launch arguments for R = 20
    assert {
        k: call["kwargs"][k]
        for k in ("shrink_block_size_m", "shrink_block_size_n", "expand_block_size_k", "expand_split_k")
    } == {"shrink_block_size_m": 64, "shrink_block_size_n": 32, "expand_block_size_k": 32, "expand_split_k": 1}


@pytest.mark.parametrize("annotation, as_tensor", [(int, False), (torch.Tensor, True)], ids=["int", "tensor"])
def test_vllm_convention_arguments(annotation, as_tensor):
    def _fused_moe_lora(
        output,
        qcurr_hidden_states,
        lora_a_stacked,
        lora_b_stacked,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        token_lora_mapping,
        max_lora_rank,
        top_k_num,
        lora_ids,
        num_active_loras,
        adapter_enabled,
        shrink_block_size_m,
        shrink_block_size_n,
        shrink_block_size_k,
        shrink_group_size_m,
        shrink_num_warps,
        shrink_num_stages,
        shrink_split_k,
        expand_block_size_m,
        expand_block_size_n,
        expand_block_size_k,
        expand_group_size_m,
        expand_num_warps,
        expand_num_stages,
        expand_split_k,
        mul_routed_weight=False,
        fully_sharded=False,
        offset=0,
        add_inputs=True,
    ):
        recording.CALLS.append(dict(locals()))

    _fused_moe_lora.__annotations__["num_active_loras"] = annotation  # as vLLM's file annotates it
    adapter = conventions.vllm_adapter(types.SimpleNamespace(_fused_moe_lora=_fused_moe_lora), "recording")
    assert adapter.capabilities == {"fp32_precision": "tf32", "alignment": 16}
    case = SPLIT.replace(num_slots=3, slotting="random", m=12)
    t, call = _recorded(adapter, case, CONFIG)
    present = sorted(set(t.token_lora.tolist()))  # the distinct slots of the batch, -1 first, padded with -1
    assert call["lora_ids"].tolist() == present + [-1] * (case.num_slots + 1 - len(present))
    active = call["num_active_loras"]
    assert (active.tolist() == [case.num_slots + 1]) if as_tensor else active == case.num_slots + 1
    assert call["token_lora_mapping"] is t.token_lora and call["add_inputs"] is True
    assert {k: call[k] for k in fused_config_kwargs(CONFIG)} == fused_config_kwargs(CONFIG)
    assert call["sorted_token_ids"].shape[1] == padded_length(case.m * case.top_k, case.num_experts, 32)


# ---- the fakes through the oracle (configuration passed, as the fuzzer does for a `config` parameter) ----
@pytest.mark.parametrize(
    "correct, buggy",
    [(SGLANG, SGLANG_BUGGY), (VLLM, VLLM_BUGGY), (FUSED, FUSED_BUGGY)],
    ids=["sglang", "vllm", "from_fused"],
)
def test_expand_split_k_grid_bug_is_caught(correct, buggy, at_root):
    for name, want in ((correct, "pass"), (buggy, "mismatch")):
        v = check(SPLIT, name, "cpu", impl=_with_config(resolve_adapter(name)))
        assert v.kind == want, f"{name}: {v.kind}: {v.message}"


def test_the_buggy_twin_is_right_without_expand_split_k(at_root):
    """The seeded bug is the one deviation (the three fakes share the kernel: one check covers them)."""
    ok = SPLIT.replace(
        config=MoeLoraConfig(block_m=16, shrink=TileConfig(16, 16, split_k=2), expand=TileConfig(16, 16))
    )
    v = check(ok, FUSED_BUGGY, "cpu", impl=_with_config(resolve_adapter(FUSED_BUGGY)))
    assert v.kind == "pass", f"{v.kind}: {v.message}"


def resolve_adapter(name: str):
    """The adapter function itself (fuzz.targets.impls.resolve wraps it in a closure over Tensors)."""
    if is_upstream(name):
        return load(name)
    import tests.example_impl as example

    return getattr(example, name.rsplit(":", 1)[1])


CAMPAIGN_SEED = 1  # its case 5 (M=34, k=4, E=4, expand split_k 4) shows the bug; the loops stop at the finding
CAMPAIGN_CASES = 40  # an upper limit, in case the case stream changes


def test_campaign_stream_finds_the_bug_and_passes_the_twin(at_root):
    """Must-show (issue 12): our fused-convention kernel with the uncovered expand split-K grid, behind from_fused,
    is found by the campaign's own case stream (fuzz.campaign.runner.case_for, in-process, configuration passed) with
    expand split_k > 1, and its correct twin passes the same cases, configuration twins included."""
    cfg = CampaignConfig(impl=FUSED_BUGGY, device="cpu", seed=CAMPAIGN_SEED)
    fixed, broken = resolve_adapter(FUSED), resolve_adapter(FUSED_BUGGY)
    found = None
    for i in range(CAMPAIGN_CASES):
        case = case_for(cfg, i, wrap(FUSED, fixed).profile())
        v = check(case, FUSED, "cpu", impl=_with_config(fixed), metamorphic=i % 4 == 0)
        assert v.kind == "pass", f"correct twin, case {i}: {v.kind}: {v.message}\n{case}"
        if check(case, FUSED_BUGGY, "cpu", impl=_with_config(broken)).kind != "pass":
            found = case
            break
    assert found is not None, f"not found in {CAMPAIGN_CASES} cases"
    assert found.config.expand.split_k > 1


@pytest.mark.parametrize("name", [SGLANG, VLLM], ids=["sglang", "vllm"])
def test_named_correct_fakes_run_clean_on_the_campaign_stream(name, at_root):
    adapter = resolve_adapter(name)
    for i in range(4):
        case = case_for(CampaignConfig(impl=name, device="cpu", seed=CAMPAIGN_SEED), i, wrap(name, adapter).profile())
        v = check(case, name, "cpu", impl=_with_config(adapter))
        assert v.kind == "pass", f"case {i}: {v.kind}: {v.message}\n{case}"


def _protocol_passes_config() -> bool:
    """Whether fuzz.targets.impls hands `config` to an implementation that takes it (issue 12 item 1)."""
    recording.CALLS.clear()
    case = Case(config=MoeLoraConfig(block_m=16, shrink=TileConfig(16, 16), expand=TileConfig(16, 16)))
    resolve("tests.fakes.recording:record")(materialize(case, "cpu"))
    return bool(recording.CALLS) and recording.CALLS[-1]["config"] == case.config


PROTOCOL_PASSES_CONFIG = _protocol_passes_config()


def test_runner_campaign_finds_the_bug_with_a_split_k_repro(at_root, tmp_path):
    assert PROTOCOL_PASSES_CONFIG
    report = run_campaign(
        CampaignConfig(
            impl=FUSED_BUGGY,
            device="cpu",
            budget=110,
            max_cases=CAMPAIGN_CASES,
            seed=CAMPAIGN_SEED,
            out=tmp_path,
            stop_after=1,
            quiet=True,
        )
    )
    assert report.findings, "no finding"
    repro = json.loads(next(tmp_path.glob("repro-*.json")).read_text())
    assert repro["case"]["config"]["expand"]["split_k"] > 1, repro["case"]["config"]


def test_runner_campaign_of_the_correct_twin_is_clean(at_root, tmp_path):
    report = run_campaign(
        CampaignConfig(impl=FUSED, device="cpu", budget=110, max_cases=4, seed=CAMPAIGN_SEED, out=tmp_path, quiet=True)
    )
    assert report.cases == 4 and not report.findings, report.findings


def _recording_vllm(sorted_annotation):
    def _fused_moe_lora(
        output,
        qcurr_hidden_states,
        lora_a_stacked,
        lora_b_stacked,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        token_lora_mapping,
        max_lora_rank,
        top_k_num,
        lora_ids,
        num_active_loras,
        adapter_enabled,
        shrink_block_size_m,
        shrink_block_size_n,
        shrink_block_size_k,
        shrink_group_size_m,
        shrink_num_warps,
        shrink_num_stages,
        shrink_split_k,
        expand_block_size_m,
        expand_block_size_n,
        expand_block_size_k,
        expand_group_size_m,
        expand_num_warps,
        expand_num_stages,
        expand_split_k,
        mul_routed_weight=False,
        fully_sharded=False,
        offset=0,
    ):
        recording.CALLS.append(dict(locals()))

    _fused_moe_lora.__annotations__["sorted_token_ids"] = sorted_annotation
    return conventions.vllm_adapter(types.SimpleNamespace(_fused_moe_lora=_fused_moe_lora), "recording")


def test_vllm_runtime_naive_block_assignment_and_fully_sharded():
    """vLLM's runtime passes no align buffers for few routed pairs (M*k*8 <= E*L, not fully sharded), and
    fully_sharded for a call with a column offset (PunicaWrapperGPU.add_lora_w13 / add_lora_w2)."""
    adapter = _recording_vllm(torch.Tensor | None)
    assert adapter.settings["naive_sparsity"] == conventions.NAIVE_SPARSITY
    few = SPLIT.replace(m=1, top_k=1, num_experts=8, num_slots=2, offset=0, extra_cols=0)
    assert conventions.naive_block_assignment(1, 1, 8, 2, False)
    if conventions.fully_sharded_call(few.m, few.top_k, few.num_experts, few.num_slots, few.rank):
        few = few.replace(rank=few.rank + 1, real_rank=min(few.real_rank, few.rank + 1))
    t, call = _recorded(adapter, few, CONFIG)
    assert call["sorted_token_ids"] is None and call["num_tokens_post_padded"] is None
    assert call["expert_ids"].tolist() == t.topk_ids.reshape(-1).tolist() and call["fully_sharded"] is False
    shifted = few.replace(offset=4, extra_cols=0)  # an offset: a fully sharded layer, always aligned
    _t, call = _recorded(adapter, shifted, CONFIG)
    assert call["fully_sharded"] is True and call["sorted_token_ids"] is not None
    # a version whose signature does not take None keeps the align buffers
    _t, call = _recorded(_recording_vllm(torch.Tensor), few, CONFIG)
    assert call["sorted_token_ids"] is not None


def test_vllm_contract_keeps_the_layout_with_mul_routed_weight():
    from moe_lora_fuzz.fuzz.targets.impls import ImplProfile
    from moe_lora_fuzz.fuzz.upstream import contract

    adapter = _recording_vllm(torch.Tensor | None)
    assert adapter.settings["contract"] == ["layout_follows_mul_routed_weight"]
    rule = contract.RULES["layout_follows_mul_routed_weight"]
    assert rule.cite and all(":" in c for c in rule.cite)  # file:function of the upstream wrapper
    profile = ImplProfile(takes_config=True, settings={"contract": adapter.settings["contract"]})
    for mrw, layout in ((True, "per_routed"), (False, "per_token")):
        case = SPLIT.replace(mul_routed_weight=mrw, layout="per_token" if mrw else "per_routed", top_k=2)
        assert profile.fit(case).layout == layout  # campaigns draw inside the contract
        broken = contract.violations(profile.fit(case), profile.settings["contract"])
        assert [(w, c.layout) for w, c in broken] == [
            ("contract layout_follows_mul_routed_weight", "per_token" if mrw else "per_routed")
        ]
    assert contract.violations(SPLIT.replace(top_k=1), ["layout_follows_mul_routed_weight"]) == []


def test_a_vllm_version_without_offset_gets_outputs_exactly_its_slices_wide():
    from moe_lora_fuzz.fuzz.targets.impls import ImplProfile

    adapter = _recording_vllm(torch.Tensor)
    assert "out_is_exactly_the_slices" not in adapter.settings["contract"]  # it takes an offset
    old = types.SimpleNamespace(_fused_moe_lora=_old_vllm_signature)
    settings = conventions.vllm_adapter(old, "recording").settings
    assert settings["contract"] == ["layout_follows_mul_routed_weight", "out_is_exactly_the_slices"]
    fitted = ImplProfile(takes_config=True, settings=settings).fit(SPLIT.replace(offset=3, extra_cols=2))
    assert (fitted.offset, fitted.extra_cols) == (0, 0)


def _old_vllm_signature(
    output,
    qcurr_hidden_states,
    lora_a_stacked,
    lora_b_stacked,
    topk_weights,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    max_lora_rank,
    top_k_num,
    lora_ids,
    adapter_enabled,
    shrink_block_size_m,
    shrink_block_size_n,
    shrink_block_size_k,
    shrink_group_size_m,
    shrink_num_warps,
    shrink_num_stages,
    shrink_split_k,
    expand_block_size_m,
    expand_block_size_n,
    expand_block_size_k,
    expand_group_size_m,
    expand_num_warps,
    expand_num_stages,
    expand_split_k,
    mul_routed_weight=False,
):
    """vLLM 0.11's parameters (no token_lora_mapping, num_active_loras, fully_sharded, offset)."""
