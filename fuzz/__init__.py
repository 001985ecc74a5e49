"""The fuzzer: cases, strategies, oracle, campaign runner, repro files, minimiser and CLI."""
