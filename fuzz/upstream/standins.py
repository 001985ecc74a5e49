"""Real sibling modules first, stand-ins last: the import environment of one SGLang / vLLM kernel file.

A kernel file is imported as a module of its package (`vllm.lora.ops.triton_ops.fused_moe_lora_op`). The
package is the folder the file lives in: its modules (`utils.py`, `kernel_utils.py`, ...) are the REAL ones,
read from disk when the file imports them (the package's `__init__.py` is not run: it imports every op of
the folder, and only the kernel's own imports matter). Every other module of the framework (`vllm.*`,
`sglang.*`, `sgl_kernel.*`) is a stand-in, made on demand for whatever name is imported. A stand-in module
answers an attribute by one policy, the same for every module, by the attribute's NAME (modules move between
releases; what `async_tensor_h2d` means does not):

- ANSWERS below: names whose meaning is unambiguous, answered honestly for this process: one tensor-parallel
  rank (all-reduce / all-gather return their input), custom-op registration that registers nothing
  (upstream's own `except AttributeError` fallback keeps the Python function), the real Triton, a host-to-
  device copy, platform and device queries answered from torch (CUDA or CPU; never ROCm, XPU or NPU).
- capability predicates by pattern: `is_sm<NN>_supported` (and `is_blackwell_supported`, `is_hopper...`):
  a CUDA device of at least that compute capability.
- settings: `VLLM_*` / `SGLANG_*` attributes of a stand-in read as None (unset).
- anything else is a HARNESS GAP: `StandInGap` (an AttributeError, so `hasattr` stays truthful) naming module
  and attribute. At load time it is one `error:` line; at call time `HarnessGap`, which the oracle turns into
  the verdict `harness-error` (fuzz.judgement.oracle) that stops the campaign. A gap is never a kernel finding.

The environment is installed in sys.modules only while the file is imported and while it is called
(`Environment.active`), then sys.modules is put back exactly as it was; `used` lists every stand-in name the
file read (report.json's `upstream.standins`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path

import moe_lora_fuzz.kernels.runtime  # noqa: F401  first: picks compiler or interpreter before triton.language loads
import torch
import triton
import triton.language as tl

ROOTS = {"sglang": ("sglang", "sgl_kernel"), "vllm": ("vllm",)}
# the package a loose kernel file (not inside a framework folder) is imported into, for its relative imports
PACKAGE = {"sglang": "sglang.srt.lora.triton_ops", "vllm": "vllm.lora.ops.triton_ops"}
_MISSING = object()


class StandInGap(AttributeError):
    """A stand-in cannot honestly provide this name (a harness gap, not a kernel bug)."""

    def __init__(self, module: str, attr: str):
        super().__init__(f"stand-in {module} has no {attr!r} (fuzz/upstream/standins.py: harness gap)")
        self.module, self.attr = module, attr


class HarnessGap(Exception):
    """Raised out of a kernel call that failed on a stand-in gap: the verdict `harness-error`."""


# ---- honest answers -----------------------------------------------------------------------------------
def _capability(device=None) -> tuple[int, int]:
    if not torch.cuda.is_available():
        return (0, 0)
    if device is not None and not isinstance(device, int) and torch.device(device).type != "cuda":
        return (0, 0)
    return torch.cuda.get_device_capability(device)


def _at_least(major: int, minor: int = 0):
    def query(device=None, *_a, **_k) -> bool:
        return _capability(device) >= (major, minor)

    return query


def _false(*_args, **_kwargs) -> bool:
    return False


def _identity(tensor, *_args, **_kwargs):
    return tensor  # one tensor-parallel rank: a reduction or a gather over one rank is the input itself


def _register_nothing(*_args, **_kwargs) -> None:
    return None


def _next_power_of_2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def _compute_units(device_id=None) -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(device_id or 0).multi_processor_count
    return torch.get_num_threads()  # the interpreter's "device": the host threads torch uses


def _max_shared_memory(device_id=0) -> int:
    if not torch.cuda.is_available():
        raise StandInGap("get_max_shared_memory_bytes", "on a CPU (no device shared memory)")
    value = getattr(torch.cuda.get_device_properties(device_id or 0), "shared_memory_per_block_optin", None)
    if not value:  # an older torch does not report it: a gap, not a guess
        raise StandInGap("get_max_shared_memory_bytes", "shared_memory_per_block_optin (not reported by torch)")
    return int(value)


def _h2d(data, device=None, dtype=None, out=None, *_a, target_device=None, pin_memory=False, **_k):
    t = data if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=dtype)
    t = t.to(device=device or target_device, dtype=dtype or t.dtype)
    if out is not None:
        out.copy_(t)
        return out
    return t


def _set_allocator(device):
    triton.set_allocator(lambda size, _align, _stream: torch.empty(size, device=device, dtype=torch.int8))


class _Platform:
    """vllm.platforms.current_platform for this machine: CUDA or CPU, never ROCm/XPU/TPU. An unknown method
    is a gap."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise StandInGap("vllm.platforms.current_platform", name)

    @property
    def device_type(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    device_name = device_type

    def is_cuda(self) -> bool:
        return torch.cuda.is_available()

    is_cuda_alike = is_cuda

    def is_cpu(self) -> bool:
        return not torch.cuda.is_available()

    is_rocm = is_xpu = is_tpu = is_out_of_tree = staticmethod(_false)

    def num_compute_units(self, device_id=None) -> int:
        return _compute_units(device_id)

    def get_device_capability(self, device_id: int = 0):
        cap = _capability(device_id if torch.cuda.is_available() else None)
        if cap == (0, 0):
            return None
        return types.SimpleNamespace(major=cap[0], minor=cap[1], to_int=lambda: cap[0] * 10 + cap[1])

    def has_device_capability(self, capability, device_id: int = 0) -> bool:
        want = capability if isinstance(capability, tuple) else divmod(int(capability), 10)
        return torch.cuda.is_available() and _capability(device_id) >= tuple(want)

    def is_device_capability(self, capability, device_id: int = 0) -> bool:
        want = capability if isinstance(capability, tuple) else divmod(int(capability), 10)
        return torch.cuda.is_available() and _capability(device_id) == tuple(want)


ANSWERS = dict(
    # one tensor-parallel rank
    tensor_model_parallel_all_reduce=_identity,
    tensor_model_parallel_all_gather=_identity,
    get_tensor_model_parallel_world_size=lambda *_a: 1,
    get_tensor_model_parallel_rank=lambda *_a: 0,
    # custom-op registration: nothing registered, upstream falls back to the Python function
    direct_register_custom_op=_register_nothing,
    # Triton itself
    triton=triton,
    tl=tl,
    HAS_TRITON=True,
    set_triton_allocator=_set_allocator,
    # small utilities with one meaning
    next_power_of_2=_next_power_of_2,
    cdiv=triton.cdiv,
    init_logger=logging.getLogger,
    async_tensor_h2d=_h2d,
    # platform and device, from torch
    current_platform=_Platform(),
    is_cuda=torch.cuda.is_available,
    is_cuda_alike=torch.cuda.is_available,
    is_hip=_false,
    is_rocm=_false,
    is_xpu=_false,
    is_npu=_false,
    is_cpu=lambda: not torch.cuda.is_available(),
    get_max_shared_memory_bytes=_max_shared_memory,
    get_device_core_count=_compute_units,
    # modes that follow a setting, all settings unset (below): off
    vllm_is_batch_invariant=_false,
    # PDL / TMA: as upstream decides, only on a CUDA device of capability 9.0 or newer
    is_arch_support_pdl=_at_least(9),
    supports_pdl=_at_least(9),
    supports_tma=_at_least(9),
    use_persistent=_false,
    is_blackwell_supported=_at_least(10),
    is_blackwell=_at_least(10),
    is_hopper=_at_least(9),
)
_SM = re.compile(r"^is_sm(\d+)x?_supported$")  # is_sm90_supported, is_sm100_supported, is_sm120_supported
_SETTING = re.compile(r"^(VLLM|SGLANG|SGL)_[A-Z0-9_]+$")


def answer(module: str, attr: str):
    """The stand-in value of `module.attr` by the policy of the module docstring; StandInGap if none."""
    if attr.startswith("__"):
        raise AttributeError(attr)  # dunder lookups (importlib, inspect) are never gaps
    if attr in ANSWERS:
        return ANSWERS[attr]
    m = _SM.match(attr)
    if m:
        return _at_least(*divmod(int(m.group(1)), 10))  # sm90 -> 9.0, sm100 -> 10.0, sm89 -> 8.9
    if _SETTING.match(attr):
        return None  # an unset setting
    raise StandInGap(module, attr)


class StandInModule(types.ModuleType):
    """A framework module outside the kernel's folder; attributes by `answer`, every one read noted in `used`."""

    def __init__(self, name: str, used: set):
        super().__init__(name, f"fuzz.upstream stand-in for {name} (fuzz/upstream/standins.py)")
        self.__path__ = []  # a package: its submodules are stand-ins too
        self.__dict__["_used"] = used

    def __call__(self, *_args, **_kwargs):
        # `from vllm.x import name` of a name no policy answers imports a stand-in submodule `vllm.x.name`
        # (it may be one); called, it was a function after all: a gap
        parent, _, leaf = self.__name__.rpartition(".")
        raise StandInGap(parent, leaf)

    def __getattr__(self, attr):
        value = answer(self.__name__, attr)
        self._used.add(f"{self.__name__}.{attr}")
        setattr(self, attr, value)
        return value


def package_of(framework: str, file: Path) -> str:
    """The dotted package of a kernel file: from the framework's top folder in its path when there is one
    (an extracted wheel, a branch checkout), else the package the kernel lives in upstream (PACKAGE)."""
    parts = file.resolve().parent.parts
    for root in ROOTS[framework]:
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            return ".".join(parts[i:])
    return PACKAGE[framework]


class Environment(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The import environment of one kernel file: its folder as the real package, stand-ins for the rest."""

    def __init__(self, framework: str, package: str, folder: Path):
        if framework not in ROOTS:
            raise ValueError(f"framework: must be one of {', '.join(ROOTS)} (got {framework!r})")
        self.framework, self.package, self.folder = framework, package, Path(folder)
        self.roots = ROOTS[framework]
        self.modules: dict[str, types.ModuleType] = {}  # kept between activations
        self.used: set[str] = set()  # stand-in attributes read ("module.attr")

    # -- finder / loader ------------------------------------------------------------------------------
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.roots:
            return None
        if name.startswith(self.package + "."):
            rel = Path(*name[len(self.package) + 1 :].split("."))
            file, pkg = self.folder / rel.with_suffix(".py"), self.folder / rel / "__init__.py"
            if file.is_file():
                return importlib.util.spec_from_file_location(name, file)
            if pkg.is_file():
                return importlib.util.spec_from_file_location(name, pkg, submodule_search_locations=[str(pkg.parent)])
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        if spec.name == self.package:
            mod = types.ModuleType(spec.name, f"{self.folder} (its __init__.py not run)")
            mod.__path__ = [str(self.folder)]
            return mod
        return StandInModule(spec.name, self.used)

    def exec_module(self, module):
        return None

    def standins(self) -> list[str]:
        return sorted(self.used)

    # -- sys.modules while importing and calling -------------------------------------------------------
    def _ours(self, name: str) -> bool:
        return name.split(".")[0] in self.roots

    @contextlib.contextmanager
    def active(self):
        """This environment's modules in sys.modules (and its finder first on sys.meta_path) for the block,
        then exactly what was there before."""
        saved = {n: m for n, m in sys.modules.items() if self._ours(n)}
        for n in saved:
            del sys.modules[n]
        sys.modules.update(self.modules)
        sys.meta_path.insert(0, self)
        try:
            yield self
        finally:
            sys.meta_path.remove(self)
            for n in [n for n in sys.modules if self._ours(n)]:
                self.modules[n] = sys.modules.pop(n)
            sys.modules.update(saved)

    def gap_in(self, e: BaseException) -> str | None:
        """The harness gap behind an exception (its chain included), as one line; None if it is not one."""
        seen = set()
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            if isinstance(e, StandInGap):
                return str(e)
            if isinstance(e, HarnessGap):
                return str(e)
            if isinstance(e, ImportError) and isinstance(self.modules.get(e.name or "", None), StandInModule):
                m = re.search(r"cannot import name '([^']+)'", str(e))
                return str(StandInGap(e.name, m.group(1) if m else "?"))
            e = e.__cause__ or e.__context__
        return None


def environment_for(framework: str, file: Path) -> Environment:
    file = Path(file).resolve()
    return Environment(framework, package_of(framework, file), file.parent)


def load_module(env: Environment, file: Path):
    """Import the kernel file in `env`; exceptions propagate (the caller reads gaps with env.gap_in)."""
    name = f"{env.package}.{Path(file).stem}"
    with env.active():
        sys.modules.pop(name, None)
        return importlib.import_module(name)
