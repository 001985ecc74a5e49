"""pytest set-up: --device, markers applied at collection, Hypothesis profiles.

The device is decided here, before any test module imports kernels, because Triton picks interpreter
or compiler when a kernel is decorated (kernels/runtime.py).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from fuzz.interpreter import install as install_interpreter


def pytest_addoption(parser):
    parser.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="where kernels run: cuda, cpu (Triton interpreter), auto (cuda when present)")


def _resolve(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def pytest_configure(config):
    device = _resolve(config.getoption("--device"))
    config._fuzz_device = device
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        install_interpreter()  # bf16 dots/atomics and TF32 as on a GPU (fuzz/interpreter.py)


def pytest_collection_modifyitems(config, items):
    """gpu tests skip on CPU with a reason; interpreter tests skip in GPU runs (the GPU machines' triton
    3.6 interpreter does not work with their numpy 2.5, SPEC §5); everything else runs on the device."""
    if config._fuzz_device != "cuda":
        marker, why = "gpu", "needs a CUDA GPU (run with --device cuda on a GPU machine)"
    else:
        marker, why = "interpreter", "runs the CPU interpreter; the CPU suite covers it"
    for item in items:
        if marker in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def device(request) -> str:
    return request.config._fuzz_device


# Pre-merge: derandomised so CI is reproducible, bounded, no database on a throwaway clone.
settings.register_profile("premerge", derandomize=True, max_examples=12, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
# Nightly: random, many examples, an example database so failures are retried first next night.
settings.register_profile("nightly", derandomize=False, max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=5, deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "premerge"))
