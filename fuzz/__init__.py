"""The fuzzer: cases, strategies, oracle, campaign runner, repro files, minimiser and CLI."""

from moe_lora_fuzz import __version__  # noqa: F401  one version, in the namespace package
