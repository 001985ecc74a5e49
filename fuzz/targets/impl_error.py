"""The one error of loading an implementation (fuzz.targets.impls for ours and files, fuzz.upstream for released
code): its message is one line, which the CLI prints as `error: ...` (exit 2). Imports nothing, so both
loaders share it without importing each other."""


class ImplError(Exception):
    """The name cannot be turned into an implementation (usage error, exit 2)."""
