"""The pytest plugin installed in an environment never collides with the projects that share it: a project
whose conftest has its own `--device` option, `device` fixture and `gpu` marker runs beside it unchanged, and
the plugin neither turns on Triton's interpreter nor loads Hypothesis profiles unless asked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the plugin by name where this checkout is not pip-installed; an installed one is loaded by its entry point
PLUGIN = [] if any(ep.name == "moe_lora_fuzz" for ep in entry_points(group="pytest11")) else [
    "-p", "moe_lora_fuzz.fuzz.pytest_plugin"
]  # fmt: skip

CONFTEST = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--device", default="tpu", help="this project's own device option")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: this project's own meaning")


@pytest.fixture
def device(request):
    return request.config.getoption("--device")
"""

TESTS = """
import os

import pytest
from hypothesis import settings


def test_own_option_and_fixture(device):
    assert device == "npu"


@pytest.mark.gpu
def test_own_gpu_marker_is_not_skipped_by_the_plugin():
    pass


def test_plugin_left_the_environment_alone():
    assert "TRITON_INTERPRET" not in os.environ
    assert settings.default.max_examples == 100  # Hypothesis's own default profile


def test_plugin_fixture_is_prefixed(pytestconfig):
    assert pytestconfig.getoption("moe_device") is None
"""

WITH_DEVICE = """
def test_both_devices(device, moe_device):
    assert device == "npu" and moe_device == "cpu"
"""


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "HYPOTHESIS_PROFILE")}
    env["PYTHONPATH"] = str(ROOT)  # the package, not this repository's conftest (rootdir is the project)
    return subprocess.run(
        [sys.executable, "-m", "pytest", *PLUGIN, "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _project(tmp_path: Path, tests: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_project.py").write_text(tests)
    return project


def test_a_conftest_with_its_own_device_option_works_beside_the_plugin(tmp_path):
    proc = _pytest(_project(tmp_path, TESTS), "--device", "npu", "--strict-markers", "test_project.py")
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "already added" not in proc.stderr and "already used" not in proc.stderr
    assert ": device " not in proc.stdout  # no moe-lora-fuzz header line in a project that did not ask


def test_the_plugins_own_option_and_fixture_beside_the_projects(tmp_path):
    proc = _pytest(_project(tmp_path, WITH_DEVICE), "--device", "npu", "--moe-device", "cpu", "test_project.py")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"^moe-lora-fuzz \S+: device cpu; (interpreter patched|warning: )", proc.stdout, re.M), proc.stdout
