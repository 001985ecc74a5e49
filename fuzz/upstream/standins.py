"""Stand-ins for the framework modules a single SGLang / vLLM kernel file imports.

A kernel file taken from a branch imports a few framework modules that have nothing to do with the kernel
itself. While such a file is imported (and only then: `installed()` restores sys.modules afterwards, whether
the import worked or not), these stand-ins answer instead:

- tensor-parallel collectives (`sglang.srt.distributed`, `vllm.distributed`): one rank;
  `tensor_model_parallel_all_reduce` / `..._all_gather` return their input, world size 1, rank 0.
- custom-op registration (`direct_register_custom_op` in `sglang.srt.utils`, `sglang.srt.utils.common`,
  `vllm.utils`, `vllm.utils.torch_utils`): does nothing; the file's `torch.ops.<ns>.<op>` lookup then raises
  AttributeError and upstream's own fallback keeps the Python function (the adapters call `_fused_moe_lora`
  directly anyway).
- platform queries (`vllm.platforms.current_platform`, `sglang.srt.utils.is_cuda/is_hip/is_xpu/is_npu`):
  answered from torch for this machine (CUDA or CPU, device capability); never ROCm, XPU or NPU.
- capability queries (`sgl_kernel.utils.is_arch_support_pdl`, `vllm.lora.ops.triton_ops.utils.supports_pdl`
  and `supports_tma`): true only on a CUDA device of capability 9.0 or higher, as upstream decides;
  `use_persistent` is false.
- `vllm.triton_utils`: the real `triton` and `triton.language` (`HAS_TRITON = True`).
- `vllm.envs`: every `VLLM_*` setting reads as None (unset). `vllm.logger.init_logger`: `logging.getLogger`.

The file itself is imported as a module of the package it lives in upstream
(`sglang.srt.lora.triton_ops.<stem>`, `vllm.lora.ops.triton_ops.<stem>`), so its relative imports (`from
.utils import supports_pdl`) reach the stand-ins. Any other framework module is not stood in for: importing it
fails with a one-line error that names it. Functions that import framework modules lazily, at call time, see
the real modules (or none) once the import is over.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from functools import lru_cache

import torch
import triton
import triton.language as tl

_MISSING = object()


# ---- the answers --------------------------------------------------------------------------------------
def _identity(tensor, *_args, **_kwargs):
    return tensor  # one tensor-parallel rank: a reduction or a gather over one rank is the input itself


def _register_nothing(*_args, **_kwargs) -> None:
    return None


def _capability(device=None) -> tuple[int, int]:
    if not torch.cuda.is_available():
        return (0, 0)
    if device is not None and torch.device(device).type != "cuda":
        return (0, 0)
    return torch.cuda.get_device_capability(device)


def _sm90_or_newer(device=None) -> bool:
    return _capability(device) >= (9, 0)


def _false(*_args, **_kwargs) -> bool:
    return False


def _next_power_of_2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


class _Platform:
    """vllm.platforms.current_platform for this machine: CUDA or CPU, never ROCm/XPU/TPU."""

    @property
    def device_type(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def is_cuda(self) -> bool:
        return torch.cuda.is_available()

    is_cuda_alike = is_cuda

    def is_cpu(self) -> bool:
        return not torch.cuda.is_available()

    is_rocm = is_xpu = is_tpu = staticmethod(_false)

    def get_device_capability(self, device_id: int = 0):
        cap = _capability(device_id if torch.cuda.is_available() else None)
        return (
            None
            if cap == (0, 0)
            else types.SimpleNamespace(major=cap[0], minor=cap[1], to_int=lambda: cap[0] * 10 + cap[1])
        )

    def has_device_capability(self, capability, device_id: int = 0) -> bool:
        want = capability if isinstance(capability, tuple) else divmod(int(capability), 10)
        return torch.cuda.is_available() and _capability(device_id) >= tuple(want)

    def is_device_capability(self, capability, device_id: int = 0) -> bool:
        want = capability if isinstance(capability, tuple) else divmod(int(capability), 10)
        return torch.cuda.is_available() and _capability(device_id) == tuple(want)


def _unset_setting(name: str):
    if name.startswith("VLLM_"):
        return None
    raise AttributeError(f"stand-in vllm.envs has no {name!r} (only VLLM_* settings, all unset)")


# ---- the modules --------------------------------------------------------------------------------------
_COLLECTIVES = dict(
    tensor_model_parallel_all_reduce=_identity,
    tensor_model_parallel_all_gather=_identity,
    get_tensor_model_parallel_world_size=lambda: 1,
    get_tensor_model_parallel_rank=lambda: 0,
)
_SGLANG_UTILS = dict(
    direct_register_custom_op=_register_nothing,
    is_cuda=torch.cuda.is_available,
    is_hip=_false,
    is_xpu=_false,
    is_npu=_false,
    next_power_of_2=_next_power_of_2,
)

# module name -> attributes; a name that is a parent of another is made a package
SGLANG = {
    "sglang.srt.distributed": _COLLECTIVES,
    "sglang.srt.utils": _SGLANG_UTILS,
    "sglang.srt.utils.common": _SGLANG_UTILS,
    "sgl_kernel.utils": dict(is_arch_support_pdl=_sm90_or_newer),
    "sglang.srt.lora.triton_ops": {},
}
VLLM = {
    "vllm.distributed": _COLLECTIVES,
    "vllm.triton_utils": dict(triton=triton, tl=tl, HAS_TRITON=True),
    "vllm.utils": dict(direct_register_custom_op=_register_nothing),
    "vllm.utils.torch_utils": dict(direct_register_custom_op=_register_nothing),
    "vllm.platforms": dict(current_platform=_Platform()),
    "vllm.envs": dict(__getattr__=_unset_setting),
    "vllm.logger": dict(init_logger=logging.getLogger),
    "vllm.lora.ops.triton_ops.utils": dict(
        supports_pdl=_sm90_or_newer, supports_tma=_sm90_or_newer, use_persistent=_false
    ),
}
# the package a kernel file of each framework is imported into (for its relative imports)
PACKAGE = {"sglang": "sglang.srt.lora.triton_ops", "vllm": "vllm.lora.ops.triton_ops"}
TABLES = {"sglang": SGLANG, "vllm": VLLM}


@lru_cache(maxsize=None)
def module_names(framework: str) -> tuple[str, ...]:
    """Every module the stand-ins of `framework` install, parents included."""
    names = set()
    for name in TABLES[framework]:
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return tuple(sorted(names))


def _build(framework: str) -> dict[str, types.ModuleType]:
    table = TABLES[framework]
    names = module_names(framework)
    modules = {}
    for name in names:
        mod = types.ModuleType(name, f"fuzz.upstream stand-in for {name} (see fuzz/upstream/standins.py)")
        mod.__dict__.update(table.get(name, {}))
        if any(other.startswith(name + ".") for other in names):
            mod.__path__ = []  # a package: its submodules are the stand-ins, nothing is searched on disk
        modules[name] = mod
    for name, mod in modules.items():  # `from vllm import envs` reads the parent's attribute
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, mod)
    return modules


@contextlib.contextmanager
def installed(framework: str, extra: tuple[str, ...] = ()):
    """Install the stand-ins of `framework` in sys.modules for the duration of the block, then put back
    exactly what was there before (also for the names in `extra`, e.g. the kernel module being imported)."""
    if framework not in TABLES:
        raise ValueError(f"framework: must be one of {', '.join(TABLES)} (got {framework!r})")
    modules = _build(framework)
    # shadow every submodule of the frameworks too, so that nothing of a real installation leaks in
    roots = {name.split(".")[0] for name in modules}
    shadowed = [n for n in list(sys.modules) if n.split(".")[0] in roots]
    saved = {n: sys.modules.get(n, _MISSING) for n in set(modules) | set(extra) | set(shadowed)}
    try:
        for n in shadowed:
            del sys.modules[n]
        sys.modules.update(modules)
        yield modules
    finally:
        for n in list(sys.modules):
            if n.split(".")[0] in roots or n in saved:
                del sys.modules[n]
        for n, mod in saved.items():
            if mod is not _MISSING:
                sys.modules[n] = mod
