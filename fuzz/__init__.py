"""The fuzzer, one folder per stage of its pipeline (docs/design.md): runtime, space, data, targets, judgement,
records, execution, triage, outputs, campaign; the command line (cli.py, commands/) and the pytest plugin at
this level, beside adapters.py and upstream/ (targets kept at their documented paths). A stage imports only
the stages before it (tests/test_layout.py)."""

from moe_lora_fuzz import __version__  # noqa: F401  one version, in the namespace package
