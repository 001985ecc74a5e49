"""The repository's tests use the harness's own pytest plugin (fuzz/pytest_plugin.py: --moe-device, the
moe_device fixture, markers, Hypothesis profiles); an installed package registers it through its pytest11
entry point. pyproject.toml's `moe_lora_fuzz_suite = true` turns on its markers and profiles here.

This file also shows a project's own `--device` option and `device` fixture living beside the plugin: here
they are the short spelling of --moe-device (`pytest --device cpu` as before), for this repository only."""

from importlib.metadata import entry_points

import pytest

if not any(ep.name == "moe_lora_fuzz" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["moe_lora_fuzz.fuzz.pytest_plugin"]


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        dest="repo_device",
        default=None,
        choices=("auto", "cpu", "cuda"),
        help="this repository's spelling of --moe-device",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Before the plugin decides the device: --device here means --moe-device."""
    if config.getoption("repo_device") is not None:
        if config.getoption("moe_device") not in (None, config.getoption("repo_device")):
            raise pytest.UsageError("--device and --moe-device disagree; pass one")
        config.option.moe_device = config.getoption("repo_device")


@pytest.fixture(scope="session")
def device(moe_device) -> str:
    """ "cuda" or "cpu": the repository's tests say `device`; the plugin's fixture is `moe_device`."""
    return moe_device
