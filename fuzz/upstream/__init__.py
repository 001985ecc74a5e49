"""Load SGLang's or vLLM's fused MoE LoRA Triton kernel as a fuzzer implementation.

    --impl sglang | vllm            the installed package's kernel (found by what it defines)
    --impl sglang==0.5.23           a released version: its wheel's kernel folder, fetched into a cache
    --impl vllm==0.34.0             (fuzz/upstream/releases.py; offline once cached)
    --impl sglang:path/to/file.py   a kernel file from a branch or an extracted wheel: the real modules of its
    --impl vllm:path/to/file.py     folder, stand-ins for the rest of the framework (fuzz/upstream/standins.py)

Each returns an adapter-protocol function (fuzz.targets.impls) that takes the case's launch configuration (`config`),
calls the module's `_fused_moe_lora` the way that runtime does (fuzz/upstream/conventions.py) and carries
`capabilities`, `settings` and `trace` (fuzz/upstream/trace.py: which branches of the wrapper ran, which
stand-ins were read). Anything that prevents loading is an ImplError with one line (the CLI prints it as
`error:` and exits 2); a stand-in gap met while a case runs is the verdict `harness-error`. docs/upstream.md is
the user's guide.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Callable

from moe_lora_fuzz.fuzz.targets.impl_error import ImplError

from . import contract, releases, standins
from .conventions import ADAPTERS, MODULES, ConventionError
from .trace import Tracer, switches
from .vllm_fp8 import register as _register_vllm_fp8

_register_vllm_fp8(ADAPTERS, MODULES)  # vllm-fp8: vLLM's quantized op (fuzz/upstream/vllm_fp8.py)
FRAMEWORKS = tuple(ADAPTERS)
LIST_NAMES = (
    "sglang",
    "vllm",
    "sglang==VERSION",
    "vllm==VERSION",
    "vllm-fp8==VERSION",
    "sglang:path/to/fused_moe_lora_kernel.py",
    "vllm:path/to/fused_moe_lora_op.py",
)
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")

__all__ = ["FRAMEWORKS", "contract", "LIST_NAMES", "is_upstream", "load", "load_file", "load_installed", "load_release"]


def _impl_error(message: str) -> Exception:
    return ImplError(message)


def is_upstream(name: str) -> bool:
    """Whether an --impl name is one of this package's forms (`vllm`, `vllm==VERSION`, `vllm:FILE.py`)."""
    framework, sep, rest = name.partition("==")
    if sep:
        return framework in FRAMEWORKS
    framework, sep, rest = name.partition(":")
    return framework in FRAMEWORKS and (not sep or rest.endswith(".py"))


def load(name: str, capabilities: dict | None = None) -> Callable:
    """The adapter for an --impl name accepted by is_upstream; ImplError (one line) if it cannot load."""
    framework, sep, version = name.partition("==")
    if sep:
        return load_release(framework, version, capabilities, spec=name)
    framework, sep, path = name.partition(":")
    if framework not in FRAMEWORKS:
        raise _impl_error(f"--impl {name!r}: expected one of {', '.join(LIST_NAMES)}")
    if sep:
        return load_file(framework, path, capabilities, spec=name)
    return load_installed(framework, capabilities, spec=name)


def _adapter(framework: str, module, where: str, capabilities, spec: str, tracer: Tracer | None) -> Callable:
    try:
        adapter = ADAPTERS[framework](module, where, capabilities)
    except (ConventionError, ValueError, TypeError) as e:
        raise _impl_error(f"--impl {spec!r}: {e}") from None
    if tracer is not None:
        adapter.trace = tracer.features
        sw = switches(module)
        if adapter.settings.get("naive_sparsity"):  # the runtime's choice of sorted_token_ids=None
            sw["naive"] = [adapter.settings["naive_sparsity"]]
        adapter.settings = dict(adapter.settings, branches=tracer.declared, standins=tracer.standins(), switches=sw)
    return adapter


RELEASED_WITH = {"vllm-fp8": "vllm"}  # a framework form whose kernel ships in another framework's wheel
DEFINES = {"vllm-fp8": re.compile(r"^def _fused_moe_lora_fp8\(", re.M)}  # how that kernel file is recognised


def _sibling_defining(folder: Path, framework: str) -> Path:
    """The file of `folder` that defines `framework`'s entry point (found by content: files move between releases)."""
    for file in sorted(folder.glob("*.py")):
        if DEFINES[framework].search(file.read_text(errors="replace")):
            return file
    raise releases.ReleaseError(f"this release has no {framework} kernel (no file defining it in {folder})")


def load_release(framework: str, version: str, capabilities: dict | None = None, spec: str | None = None):
    """The adapter around a released version's kernel, from the cache or fetched into it (releases.fetch)."""
    spec = spec or f"{framework}=={version}"
    if framework not in FRAMEWORKS or not _VERSION.match(version):
        raise _impl_error(
            f"--impl {spec!r}: expected sglang==VERSION, vllm==VERSION or vllm-fp8==VERSION (e.g. vllm==0.34.0)"
        )
    wheel_of = RELEASED_WITH.get(framework, framework)  # vllm-fp8 lives in vLLM's wheel, beside vLLM's kernel
    try:
        release = releases.fetch(wheel_of, version)
        kernel = release.kernel if wheel_of == framework else _sibling_defining(release.kernel.parent, framework)
    except releases.ReleaseError as e:
        raise _impl_error(f"--impl {spec!r}: {e}") from None
    adapter = load_file(framework, kernel, capabilities, spec=spec)
    adapter.settings = dict(adapter.settings, release=version, wheel=release.wheel)
    return adapter


def _installed_kernel(framework: str) -> Path | None:
    """The installed framework's kernel file, found by what it defines (releases.KERNEL_DEF)."""
    try:
        found = importlib.util.find_spec(framework)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(list(found.submodule_search_locations)[0])
    for file in sorted(root.rglob("*moe*lora*.py"), key=lambda p: ("fused" not in p.name, len(p.parts))):
        if releases._is_kernel(file.read_bytes()):
            return file
    return None


def load_installed(framework: str, capabilities: dict | None = None, spec: str | None = None) -> Callable:
    """The adapter around the installed framework's kernel module, imported with the real framework."""
    spec = spec or framework
    hint = f"to fuzz a release instead, pass --impl {framework}==VERSION (fetched from the package index)"
    file = _installed_kernel(framework)
    if file is None:
        raise _impl_error(f"--impl {spec!r}: {framework} is not installed (no fused MoE LoRA kernel found); {hint}")
    root = Path(importlib.util.find_spec(framework).submodule_search_locations[0]).parent
    module_name = ".".join(file.relative_to(root).with_suffix("").parts)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure of the installed package
        first = str(e).splitlines()[0] if str(e) else ""
        raise _impl_error(
            f"--impl {spec!r}: cannot import {module_name}: {type(e).__name__}: {first}; {hint}"
        ) from None
    tracer = Tracer(module, None)
    return _adapter(framework, module, module_name, capabilities, spec, tracer)


def load_file(framework: str, path: str | Path, capabilities: dict | None = None, spec: str | None = None) -> Callable:
    """The adapter around one kernel file, imported with the real modules of its folder and stand-ins for the
    rest of the framework (fuzz/upstream/standins.py), which stay in place for its calls."""
    spec = spec or f"{framework}:{path}"
    if framework not in FRAMEWORKS:
        raise _impl_error(f"--impl {spec!r}: expected one of {', '.join(LIST_NAMES)}")
    file = Path(path).resolve()
    if not file.is_file():
        raise _impl_error(f"--impl {spec!r}: file {path} not found")
    env = standins.environment_for(framework, file)
    try:
        module = standins.load_module(env, file)
    except Exception as e:  # a gap, a syntax error, a failing module-level statement, a missing package
        gap = env.gap_in(e)
        if gap:
            raise _impl_error(f"--impl {spec!r}: harness gap while importing {path}: {gap}") from None
        if isinstance(e, ModuleNotFoundError):
            raise _impl_error(f"--impl {spec!r}: {path} imports {e.name}, which is not installed") from None
        first = str(e).splitlines()[0] if str(e) else ""
        raise _impl_error(f"--impl {spec!r}: cannot import {path}: {type(e).__name__}: {first}") from None
    tracer = Tracer(module, env)
    adapter = _adapter(framework, module, str(path), capabilities, spec, tracer)
    adapter.settings = dict(adapter.settings, package=env.package)
    return adapter
