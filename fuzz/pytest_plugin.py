"""pytest plugin (entry point `pytest11`): the `--device` option, the harness's markers, the `device` fixture
and the Hypothesis profiles, so exported regression tests and users' own suites run wherever the package is
installed, not only inside this repository.

The device is decided in pytest_configure, before any test module imports kernels, because Triton picks
interpreter or compiler when a kernel is decorated (kernels/runtime.py).
"""

from __future__ import annotations

import os

import pytest

MARKERS = {
    "gpu": "needs a CUDA GPU; skipped with a reason elsewhere",
    "slow": "long-running; excluded from the pre-merge run",
    "quality": "seeded-bug campaigns: the harness must find each planted bug",
    "interpreter": "runs our kernels under Triton's CPU interpreter in a subprocess; skipped in GPU runs",
    "network": "needs the package index (released wheels); skipped unless selected with -m network (tox -e upstream)",
}


def pytest_addoption(parser):
    group = parser.getgroup("moe-lora-fuzz")
    group.addoption(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where kernels run: cuda, cpu (Triton interpreter), auto (cuda when present)",
    )


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    from moe_lora_fuzz.contract import resolve_device

    device = resolve_device(config.getoption("--device"))
    config._fuzz_device = device
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
        from .interpreter import install

        install()  # bf16 dots/atomics and TF32 as on a GPU, for every Triton kernel (fuzz/interpreter.py)
    _register_profiles()


def pytest_collection_modifyitems(config, items):
    """gpu tests skip on CPU with a reason; interpreter tests skip in GPU runs (the GPU machines' triton
    3.6 interpreter does not work with their numpy 2.5, SPEC §5); everything else runs on the device."""
    if config._fuzz_device != "cuda":
        marker, why = "gpu", "needs a CUDA GPU (run with --device cuda on a GPU machine)"
    else:
        marker, why = "interpreter", "runs the CPU interpreter; the CPU suite covers it"
    network = "network" in (config.getoption("-m") or "").replace("not network", "")
    for item in items:
        if marker in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))
        if "network" in item.keywords and not network:
            item.add_marker(pytest.mark.skip(reason="needs the package index: select it with -m network"))
    # the seeded-bug campaigns are the longest tests: first, so that parallel workers (xdist) end together
    items.sort(key=lambda item: "quality" not in item.keywords)


@pytest.fixture(scope="session")
def device(request) -> str:
    """ "cuda" or "cpu" (Triton's interpreter), from --device."""
    return request.config._fuzz_device


def _register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    # Pre-merge: derandomised so CI is reproducible, bounded, no database on a throwaway clone.
    settings.register_profile(
        "premerge",
        derandomize=True,
        max_examples=12,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # Nightly: random, many examples, an example database so failures are retried first next night.
    settings.register_profile(
        "nightly",
        derandomize=False,
        max_examples=2000,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile("dev", max_examples=5, deadline=None, derandomize=True, database=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "premerge"))
