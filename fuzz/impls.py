"""Resolve an implementation name to a callable that applies the op to a Tensors object in place.

    ours                   our kernels (kernels.fused_moe_lora) with the case's config and workspace
    mutant:<id>            our kernels with one seeded bug (kernels.MUTANTS)
    module:function        an external implementation (adapter protocol below)
    path/to/file.py:function

Adapter protocol: the function is called with keyword arguments only, named as in SPEC §2:
    out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b,
    mul_routed_weight, offset, layout
all tensors on the campaign's device, and must add the op's delta into `out` in place. Anything it
raises on a case is a finding of kind "exception"; a process crash is a finding of kind "crash".
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

from kernels import MUTANTS, NO_DEVIATION, Workspace, fused_moe_lora

from .tensors import Tensors

ADAPTER_ARGS = ("out", "x", "topk_ids", "topk_weights", "token_lora", "adapter_enabled", "lora_a", "lora_b",
                "mul_routed_weight", "offset", "layout")


class ImplError(Exception):
    """The name cannot be turned into an implementation (usage error, exit 2)."""


Impl = Callable[[Tensors], None]


def _ours(deviation) -> Impl:
    def run(t: Tensors) -> None:
        fused_moe_lora(**t.op_kwargs(), config=t.case.config,
                       workspace=Workspace(intermediate=t.intermediate, align=t.align), deviation=deviation)
    return run


def _load_external(spec: str) -> Callable:
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise ImplError(f"--impl {spec!r}: expected ours, mutant:<id>, module:function or file.py:function")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise ImplError(f"--impl {spec!r}: file {target} not found")
            mod_name = f"_fuzz_impl_{abs(hash(str(path))):x}_{path.stem}"  # distinct per file path
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImplError:
        raise
    except Exception as e:  # any import-time failure is a usage error, reported in one line
        raise ImplError(f"--impl {spec!r}: cannot import {target}: {type(e).__name__}: {e}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ImplError(f"--impl {spec!r}: {target} has no callable {func!r}")
    try:
        inspect.signature(fn).bind(**{a: None for a in ADAPTER_ARGS})
    except TypeError as e:
        raise ImplError(f"--impl {spec!r}: signature does not accept the adapter keywords "
                        f"({', '.join(ADAPTER_ARGS)}): {e}") from None
    except ValueError:
        pass  # builtins without a signature: trust them
    return fn


def resolve(name: str) -> Impl:
    if name == "ours":
        return _ours(NO_DEVIATION)
    if name.startswith("mutant:"):
        mid = name.split(":", 1)[1]
        if mid not in MUTANTS:
            raise ImplError(f"--impl {name!r}: unknown mutant; known: {', '.join(MUTANTS)}")
        return _ours(MUTANTS[mid].deviation)
    fn = _load_external(name)

    def run(t: Tensors) -> None:
        fn(**t.op_kwargs())
    run.settings = getattr(fn, "settings", None)  # triage: repro files record an adapter's settings
    return run


def is_ours(name: str) -> bool:
    """Our kernels accept the fuzzer's workspace and config; external ones may not."""
    return name == "ours" or name.startswith("mutant:")


def names() -> list[str]:
    return ["ours"] + [f"mutant:{m}" for m in MUTANTS]
