"""pytest plugin (entry point `pytest11`, name `moe_lora_fuzz`): exported regression tests and users' own suites
run wherever the package is installed, and nothing it adds collides with the project it is installed beside.

Always, in every pytest run of the environment, it adds only prefixed names:
- the option `--moe-device {auto,cpu,cuda}` (or the environment variable MOE_LORA_FUZZ_DEVICE);
- the fixture `moe_device`: "cuda" or "cpu" (Triton's interpreter, prepared on first use).

A suite that asks for more (`moe_lora_fuzz_suite = true` in its pytest ini, as this repository does) or a run
that passes `--moe-device` also gets the harness's markers (gpu, slow, quality, interpreter) with their skips,
and its Hypothesis profiles (premerge, nightly, dev; picked with HYPOTHESIS_PROFILE). The device is then
decided in pytest_configure, before any test module imports kernels, because Triton picks interpreter or
compiler when a kernel is decorated (kernels/runtime.py). Without either, a project's own `--device` option,
`device` fixture, `gpu` marker and Hypothesis settings are left alone.
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
DEVICES = ("auto", "cpu", "cuda")
ENV = "MOE_LORA_FUZZ_DEVICE"


def pytest_addoption(parser):
    group = parser.getgroup("moe-lora-fuzz")
    group.addoption(
        "--moe-device",
        dest="moe_device",
        default=None,
        choices=DEVICES,
        help=f"where moe-lora-fuzz runs kernels: cuda, cpu (Triton interpreter), auto (cuda when present); "
        f"default ${ENV} or auto",
    )
    parser.addini(
        "moe_lora_fuzz_suite",
        type="bool",
        default=False,
        help="this suite is a moe-lora-fuzz suite: its markers, skips and Hypothesis profiles apply",
    )


def _requested(config) -> str | None:
    device = config.getoption("moe_device") or os.environ.get(ENV) or None
    if device is not None and device not in DEVICES:
        raise pytest.UsageError(f"{ENV}={device!r}: expected one of {', '.join(DEVICES)}")
    return device


def _active(config) -> bool:
    return bool(config.getini("moe_lora_fuzz_suite")) or config.getoption("moe_device") is not None


def pytest_configure(config):
    config._moe_device = None
    if not _active(config):
        return
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    config._moe_device = _prepare(_requested(config) or "auto")
    _register_profiles()


def _prepare(device: str) -> str:
    from moe_lora_fuzz.device import use_device  # imports nothing of Triton's: the interpreter can still be chosen

    try:
        return use_device(device)
    except ValueError as e:
        raise pytest.UsageError(f"--moe-device: {e}") from None


def pytest_report_header(config):
    """One header line in a moe-lora-fuzz suite: the device, and on CPU whether the interpreter is patched."""
    if config._moe_device is None:
        return None
    from moe_lora_fuzz import __version__

    line = f"moe-lora-fuzz {__version__}: device {config._moe_device}"
    if config._moe_device == "cpu":
        from moe_lora_fuzz.fuzz.runtime.interpreter import NOT_PATCHED_REASON

        line += (
            f"; warning: Triton's interpreter {NOT_PATCHED_REASON}" if NOT_PATCHED_REASON else "; interpreter patched"
        )
    return line


def pytest_collection_modifyitems(config, items):
    """gpu tests skip on CPU with a reason; interpreter tests skip in GPU runs (Triton fixes compiler or
    interpreter per process, at import); everything else runs on the device."""
    if config._moe_device is None:
        return  # not a moe-lora-fuzz suite: its markers mean what the project says
    if config._moe_device != "cuda":
        marker, why = "gpu", "needs a CUDA GPU (run with --moe-device cuda on a GPU machine)"
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
def moe_device(request) -> str:
    """ "cuda" or "cpu" (Triton's interpreter): --moe-device, else $MOE_LORA_FUZZ_DEVICE, else auto."""
    config = request.config
    if config._moe_device is None:
        config._moe_device = _prepare(_requested(config) or "auto")
    return config._moe_device


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
