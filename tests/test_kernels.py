"""Our kernels against the fp64 reference (through the oracle) on the named edge cases."""

import pytest
import torch

from fuzz.case import Case
from fuzz.oracle import check
from kernels import MoeLoraConfig, TileConfig, fused_moe_lora
from tests.cases import BASE, EDGES


@pytest.mark.parametrize("case", EDGES)
def test_edge_case_passes_oracle(case: Case, device):
    if device == "cpu" and case.dtype == "bfloat16" and case.config.expand.split_k > 1:
        pytest.skip("bf16 expand split-K needs bf16 atomics, which the interpreter lacks (GPU covers it)")
    v = check(case, "ours", device, metamorphic=True)
    assert v.kind == "pass", f"{v.kind}: {v.message}\n{v.worst}"


def test_default_config_heuristic_is_valid_and_correct(device):
    """A call without a config uses kernels.default_config; it must be as correct as any other."""
    from fuzz.tensors import materialize
    from reference import moe_lora_fp64
    t = materialize(BASE.replace(dtype="float32"), device)
    before = t.out.clone()
    fused_moe_lora(**t.op_kwargs())
    ref = moe_lora_fp64(t.x, t.topk_ids, t.topk_weights, t.token_lora, t.adapter_enabled, t.lora_a, t.lora_b,
                        mul_routed_weight=False)
    cols = slice(BASE.offset, BASE.offset + BASE.num_slices * BASE.n_dim)
    got = (t.out[:, :, cols].double() - before[:, :, cols].double()).reshape(ref.delta.shape)
    assert torch.allclose(got, ref.delta, atol=1e-5, rtol=1e-5)


GPU_CASES = [
    pytest.param(BASE.replace(dtype="bfloat16", rank=40, real_rank=40, config=MoeLoraConfig(
        block_m=16, shrink=TileConfig(block_n=16, block_k=16, split_k=2),
        expand=TileConfig(block_n=16, block_k=16, split_k=2))), id="bf16-split-k-both"),
    pytest.param(BASE.replace(m=300, top_k=8, num_experts=64, k_dim=1000, n_dim=520, rank=64, real_rank=64,
                              config=MoeLoraConfig(block_m=64, shrink=TileConfig(64, 128, 8, 4, 8, 4),
                                                   expand=TileConfig(128, 32, 8, 1, 8, 3))), id="larger-shape"),
    pytest.param(BASE.replace(dtype="float32", config=MoeLoraConfig(
        block_m=32, shrink=TileConfig(32, 32, 1, 1, 2, 1), expand=TileConfig(32, 16, 2, 1, 2, 1))),
        id="warps2-stages1"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_only_paths(case: Case, device):
    v = check(case, "ours", device, metamorphic=True)
    assert v.kind == "pass", f"{v.kind}: {v.message}\n{v.worst}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_gpu_random_sweep(dtype, device):
    """Forty generated GPU-sized cases per dtype: compiled kernels, warps and stages varied."""
    from fuzz.case import GPU_SIZES, RandomSource, generate
    for i in range(40):
        case = generate(RandomSource(1000 + i), GPU_SIZES, interpreter=False, seed=1000 + i).replace(dtype=dtype)
        v = check(case, "ours", device)
        assert v.kind == "pass", f"case {i}: {v.kind}: {v.message}\n{case}"


def test_plain_import_picks_interpreter_exactly_when_no_gpu():
    """`import kernels` alone must choose Triton's interpreter on a GPU-less machine (kernels/runtime.py),
    whatever order the imports inside the package end up in, and a call must then run; importing triton
    first on such a machine is refused with a clear message instead of failing inside a kernel."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    code = ("import torch, kernels; from kernels import moe_lora_kernels as k; "
            "dev = 'cuda' if torch.cuda.is_available() else 'cpu'; "
            "ids = torch.zeros(3, 2, dtype=torch.int32, device=dev); "
            "b = kernels.moe_lora_align_block_size(ids, ids[:, 0], 4, 2, 16); "
            "print(type(k.moe_lora_matmul_kernel).__name__, torch.cuda.is_available(), "
            "b.num_tokens_post_padded.tolist())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    kind, has_gpu, ntp = proc.stdout.split(maxsplit=2)
    assert kind == ("JITFunction" if has_gpu == "True" else "InterpretedFunction"), proc.stdout
    assert ntp.strip() == "[16, 0]"
    proc = subprocess.run([sys.executable, "-c", "import triton, kernels"], cwd=root, env=env, capture_output=True,
                          text=True)
    if has_gpu == "True":
        assert proc.returncode == 0, proc.stderr
    else:
        assert "import kernels first or set TRITON_INTERPRET=1" in proc.stderr
