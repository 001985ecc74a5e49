"""The fuzzer: cases, strategies, oracle, campaign runner, repro files, minimiser and CLI."""

__version__ = "0.2.0"
