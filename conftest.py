"""The repository's tests use the harness's own pytest plugin (fuzz/pytest_plugin.py: --device, markers, the
device fixture, Hypothesis profiles); an installed package registers it through its pytest11 entry point."""

from importlib.metadata import entry_points

if not any(ep.name == "moe_lora_fuzz" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["moe_lora_fuzz.fuzz.pytest_plugin"]
