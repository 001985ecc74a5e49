"""Stage 3, targets: the code under test. `--impl` names resolved to callables (impls: ours, mutants, files,
modules), the calling-convention adapters (adapters), upstream-style wrappers (upstream_style) and the one
loading error (impl_error). Released upstream kernels live in fuzz/upstream (kept at its documented path).

May import: runtime, space, data.
"""
