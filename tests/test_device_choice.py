"""--moe-device cpu on a machine that has a GPU: the interpreter must be chosen before triton.language is
imported (found on the GPU machines, where 6 interpreter tests ran compiled Triton functions on CPU tensors).
A GPU machine is imitated by a process whose torch says CUDA is available, so our kernels' import does not
turn the interpreter on by itself."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the plugin by name where this checkout is not pip-installed; an installed one is loaded by its entry point
PLUGIN = (
    ""
    if any(ep.name == "moe_lora_fuzz" for ep in entry_points(group="pytest11"))
    else "'-p', 'moe_lora_fuzz.fuzz.pytest_plugin', "
)
FAKE_GPU = "import torch; torch.cuda.is_available = lambda: True\n"

SUITE = """
import triton.language as tl
from moe_lora_fuzz.fuzz.judgement.oracle import check
from tests.cases import BASE


def test_interpreted_and_runs(moe_device):
    assert moe_device == "cpu"
    assert type(tl.standard.cumsum).__name__ == "InterpretedFunction"
    assert check(BASE.replace(dtype="bfloat16"), "ours", "cpu").kind == "pass"
"""


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", FAKE_GPU + code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_plugin_chooses_the_interpreter_before_triton_is_imported(tmp_path):
    (tmp_path / "test_suite.py").write_text(SUITE)
    code = (
        "import sys, pytest\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', "
        f"{PLUGIN}'--moe-device', 'cpu', 'test_suite.py']))\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_too_late_for_the_interpreter_is_one_clear_error(tmp_path):
    code = (
        "import triton.language\n"  # compiled Triton functions: what a GPU machine's imports give
        "from moe_lora_fuzz import use_device\n"
        "try:\n    use_device('cpu')\nexcept ValueError as e:\n    print('refused:', e)\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: device cpu: triton.language was imported before TRITON_INTERPRET=1" in proc.stdout


def test_the_readme_api_example_runs_on_the_interpreter_of_a_gpu_machine(tmp_path):
    """`from moe_lora_fuzz import Case, judge` and then `judge(..., device="cpu")` (the README's example): the
    public names import nothing of Triton's until judge has chosen the device; the names that need our kernels
    or the upstream stand-ins (from_fused, load_file) come on first use."""
    code = (
        "import sys\n"
        "from moe_lora_fuzz import Case, judge, Verdict, KINDS, Capabilities, use_device\n"
        "print('before judge:', 'triton.language' in sys.modules)\n"
        "case = Case(m=7, top_k=2, num_experts=4, num_slots=2, rank=8, real_rank=8, k_dim=64, n_dim=48)\n"
        "print('verdict:', judge(case, 'ours', device='cpu').kind)\n"
        "from moe_lora_fuzz import from_fused, load_file\n"
        "print('on first use:', callable(from_fused) and callable(load_file))\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["before judge: False", "verdict: pass", "on first use: True"], proc.stdout


def _top_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_every_module_that_imports_triton_lets_the_kernels_choose_first():
    """Outside kernels/ (whose package imports kernels.runtime first), a module that imports triton at its top
    imports our kernels before it: on a machine without a GPU their import turns the interpreter on, which must
    happen before triton.language loads (`from moe_lora_fuzz import load_file` alone once failed there)."""
    late = []
    for folder in ("fuzz", "reference", "contract"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            names = _top_level_imports(path)
            first_triton = next((i for i, n in enumerate(names) if n.split(".")[0] == "triton"), None)
            kernels = next((i for i, n in enumerate(names) if n.startswith("moe_lora_fuzz.kernels")), None)
            if first_triton is not None and (kernels is None or kernels > first_triton):
                late.append(str(path.relative_to(ROOT)))
    assert not late, f"triton imported before moe_lora_fuzz.kernels in {late}"


def test_load_file_alone_on_a_machine_without_a_gpu_gets_the_interpreter(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import torch; torch.cuda.is_available = lambda: False\n"  # a machine without a GPU, wherever this runs
        "from moe_lora_fuzz import load_file\n"
        "import triton.language as tl\n"
        "print(type(tl.standard.cumsum).__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "InterpretedFunction", proc.stderr[-3000:]
