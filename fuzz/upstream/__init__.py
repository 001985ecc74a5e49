"""Load SGLang's or vLLM's fused MoE LoRA Triton kernel as a fuzzer implementation.

    --impl sglang                 the installed package's module sglang.srt.lora.triton_ops.fused_moe_lora_kernel
    --impl vllm                   the installed package's module vllm.lora.ops.triton_ops.fused_moe_lora_op
    --impl sglang:path/to/file.py a kernel file from a branch, its framework imports stood in for
    --impl vllm:path/to/file.py   (fuzz/upstream/standins.py), in that framework's runtime convention

Each returns an adapter-protocol function (fuzz.impls) that takes the case's launch configuration (`config`),
runs align with config.block_m, calls the module's `_fused_moe_lora` the way that runtime does
(fuzz/upstream/conventions.py) and carries `capabilities` and `settings`. Anything that prevents loading is an
ImplError with one line (the CLI prints it as `error:` and exits 2). docs/upstream.md is the user's guide.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from . import standins
from .conventions import ADAPTERS, MODULES, ConventionError
from .vllm_fp8 import register as _register_vllm_fp8

_register_vllm_fp8(ADAPTERS, MODULES)  # vllm-fp8: vLLM's quantized op (fuzz/upstream/vllm_fp8.py)
FRAMEWORKS = tuple(ADAPTERS)
LIST_NAMES = ("sglang", "vllm", "sglang:path/to/fused_moe_lora_kernel.py", "vllm:path/to/fused_moe_lora_op.py")

__all__ = ["FRAMEWORKS", "LIST_NAMES", "is_upstream", "load", "load_file", "load_installed"]


def _impl_error(message: str) -> Exception:
    from moe_lora_fuzz.fuzz.impls import ImplError  # late: fuzz.impls imports this package

    return ImplError(message)


def is_upstream(name: str) -> bool:
    """Whether an --impl name is one of this package's forms (`sglang`, `vllm`, `sglang:FILE`, `vllm:FILE`)."""
    framework, sep, rest = name.partition(":")
    return framework in FRAMEWORKS and (not sep or rest.endswith(".py"))


def load(name: str, capabilities: dict | None = None) -> Callable:
    """The adapter for an --impl name accepted by is_upstream; ImplError (one line) if it cannot load."""
    framework, sep, path = name.partition(":")
    if framework not in FRAMEWORKS:
        raise _impl_error(f"--impl {name!r}: expected one of {', '.join(LIST_NAMES)}")
    if sep:
        return load_file(framework, path, capabilities, spec=name)
    return load_installed(framework, capabilities, spec=name)


def _adapter(framework: str, module, where: str, capabilities, spec: str) -> Callable:
    try:
        return ADAPTERS[framework](module, where, capabilities)
    except (ConventionError, ValueError, TypeError) as e:
        raise _impl_error(f"--impl {spec!r}: {e}") from None


def load_installed(framework: str, capabilities: dict | None = None, spec: str | None = None) -> Callable:
    """The adapter around the installed framework's kernel module (MODULES)."""
    spec = spec or framework
    module_name = MODULES[framework]
    hint = f"to fuzz a kernel file instead, pass --impl {framework}:path/to/{module_name.rsplit('.', 1)[1]}.py"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise _impl_error(
                f"--impl {spec!r}: module {module_name} not found ({framework} is not installed); {hint}"
            ) from None
        raise _impl_error(f"--impl {spec!r}: cannot import {module_name}: ModuleNotFoundError: {e}; {hint}") from None
    except Exception as e:  # any import-time failure of the installed package
        raise _impl_error(
            f"--impl {spec!r}: cannot import {module_name}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; {hint}"
        ) from None
    return _adapter(framework, module, module_name, capabilities, spec)


def load_file(framework: str, path: str | Path, capabilities: dict | None = None, spec: str | None = None) -> Callable:
    """The adapter around one kernel file, imported with the framework's stand-ins (fuzz/upstream/standins.py)
    installed in sys.modules only while it is imported."""
    spec = spec or f"{framework}:{path}"
    file = Path(path).resolve()
    if not file.is_file():
        raise _impl_error(f"--impl {spec!r}: file {path} not found")
    module_name = f"{standins.PACKAGE[framework]}.{file.stem}"
    try:
        with standins.installed(framework, extra=(module_name,)):
            loader_spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module  # relative imports and dataclasses look it up while it runs
            loader_spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        raise _impl_error(
            f"--impl {spec!r}: {path} imports {e.name}, which is neither stood in for "
            f"(fuzz/upstream/standins.py) nor installed"
        ) from None
    except Exception as e:  # a syntax error, a missing stand-in attribute, a failing module-level statement
        first = str(e).splitlines()[0] if str(e) else ""
        raise _impl_error(f"--impl {spec!r}: cannot import {path}: {type(e).__name__}: {first}") from None
    return _adapter(framework, module, str(path), capabilities, spec)
