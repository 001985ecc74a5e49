"""The package as a user installs it: `pip install .` into a fresh virtual environment, then the console script,
the pytest plugin (an exported test run outside this repository), a user implementation that imports another
package called `kernels`, and strict JSON in what a campaign writes. Also the format check (ruff)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["contract", "kernels", "reference", "fuzz", "moe_lora_fuzz", "tests", "scripts", "examples", "conftest.py"]


def _run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_format_and_lint():
    """ruff format and ruff check are clean (the same check tox's lint env runs)."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (scripts/setup.sh installs the test extra, which has it)")
    _run([ruff, "format", "--check", *SOURCES], ROOT)
    _run([ruff, "check", *SOURCES], ROOT)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (seeing this interpreter's torch/triton, which a fresh machine installs first) with the package
    installed from a copy of the checkout by `pip install .`: (python, console script, scratch directory)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "fuzz-out*", "*.egg-info", "build"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    _run([str(py), "-m", "pip", "install", "-q", str(src)], tmp, env)
    return py, env_dir / "bin" / "moe-lora-fuzz", tmp, env


@pytest.mark.interpreter
def test_installed_console_script_runs_a_campaign_with_strict_json(installed):
    py, script, tmp, env = installed
    out = tmp / "campaign"
    proc = _run([str(script), "run", "--device", "cpu", "--max-cases", "5", "--out", str(out)], tmp, env)
    assert "5 cases" in proc.stdout, proc.stdout
    report = _strict((out / "report.json").read_text())
    assert report["cases"] == 5 and report["harness"] == "0.2.0"
    assert (
        "site-packages" in _run([str(py), "-c", "import moe_lora_fuzz.fuzz as f; print(f.__file__)"], tmp, env).stdout
    )
    assert _run([str(script), "--version"], tmp, env).stdout.strip().endswith("0.2.0")


@pytest.mark.interpreter
def test_exported_test_runs_outside_the_repository(installed):
    """The exported test needs --moe-device and the moe_device fixture: the installed pytest11 plugin."""
    py, script, tmp, env = installed
    test = tmp / "elsewhere" / "test_regression.py"
    _run(
        [str(script), "export", str(ROOT / "tests/regressions/routed-weight-twice.json"), "--out", str(test)], tmp, env
    )
    proc = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--moe-device", "cpu", str(test)],
        cwd=test.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-3000:]  # red: the mutant's bug
    assert "fixture 'moe_device' not found" not in proc.stdout


@pytest.mark.interpreter
def test_user_implementation_importing_another_kernels_package(installed):
    """Hugging Face's `kernels` (stood in for here) and ours coexist: ours lives in moe_lora_fuzz.kernels."""
    py, script, tmp, env = installed
    other = tmp / "other" / "kernels"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("def get_kernel(name):\n    return name\n")
    impl = tmp / "user_impl.py"
    impl.write_text(
        "from kernels import get_kernel\n"
        "assert get_kernel('x') == 'x'\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.example_impl import torch_moe_lora as moe_lora\n"
    )
    env = dict(env, PYTHONPATH=str(other.parent))
    out = tmp / "user-campaign"
    proc = _run(
        [str(script), "run", "--device", "cpu", "--max-cases", "3", "--impl", f"{impl}:moe_lora", "--out", str(out)],
        tmp,
        env,
    )
    assert "3 cases, 0 distinct findings" in proc.stdout, proc.stdout
