"""Which kernel variants a case launches: the specialisation key of every Triton launch, for any Triton kernel.

Triton compiles one binary per kernel and per specialisation of its arguments: the constexpr values, the
launch options (num_warps, num_stages, ...), the dtype of every pointer, whether a pointer is 16-byte aligned,
whether an integer is 1 or a multiple of 16 (unless the parameter is `do_not_specialize` /
`do_not_specialize_on_alignment`), and an integer's width (i32 / i64 / u64). `key_of` computes that key from
the kernel's own signature and decorator arguments and the launch's arguments; it reads no Triton internals
beyond the decorator's attributes, so it is the same under the CPU interpreter (where nothing compiles) and on
the GPU, on triton 3.6 and 3.9, and tests can check it here.

`install()` wraps `run` of JITFunction and of the interpreter's InterpretedFunction (every launch goes
through it: `kernel[grid](...)`, autotuners and heuristics, warm-ups), once per process; `take()` returns the
keys launched since the last take, in first-launch order. On the GPU it also counts Triton's own compilations
(knobs.compilation.listener, present in 3.6 and 3.9): `compiled` (no disk-cache entry: the compiler ran) and
`loaded` (found in the on-disk cache, e.g. warmed ahead by a helper process). The worker sends both with each
verdict (fuzz.execution.worker); the campaign turns them into report.json's `variants` (docs/variants.md).
"""

from __future__ import annotations

import hashlib
import inspect
import os

_keys: dict = {}  # key -> None, in first-launch order since the last take()
_compiles = {"compiled": 0, "loaded": 0}
_installed = False


def _name(fn) -> str:
    """A kernel's name, the same in every process: its file's stem and qualified name (upstream files are
    loaded under generated module names)."""
    code = getattr(fn, "__code__", None)
    stem = os.path.splitext(os.path.basename(code.co_filename))[0] if code else getattr(fn, "__module__", "?")
    return f"{stem}:{getattr(fn, '__qualname__', repr(fn))}"


_params_of: dict = {}  # id(kernel) -> (kernel, its _params): kernels live as long as their modules


def _params(kernel) -> tuple:
    """([(name, is_constexpr, is_const, specialise, align)], {name: default}, {names}) of a JITFunction or
    InterpretedFunction."""
    hit = _params_of.get(id(kernel))
    if hit is not None and hit[0] is kernel:
        return hit[1]
    fn = kernel.fn
    sig = inspect.signature(fn)
    extra = getattr(kernel, "kwargs", {}) or {}  # the interpreter keeps the decorator's arguments here
    dns = getattr(kernel, "do_not_specialize", None) or extra.get("do_not_specialize") or ()
    dnsa = getattr(kernel, "do_not_specialize_on_alignment", None) or extra.get("do_not_specialize_on_alignment") or ()
    out = []
    for i, (name, p) in enumerate(sig.parameters.items()):
        ann = p.annotation
        text = (
            ann
            if isinstance(ann, str)
            else getattr(ann, "__name__", "" if ann is inspect.Parameter.empty else str(ann))
        )
        constexpr = "constexpr" in text
        const = not constexpr and ("const" in text or text.startswith("*k"))
        out.append((name, constexpr, const, not (i in dns or name in dns), not (i in dnsa or name in dnsa)))
    defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    _params_of[id(kernel)] = (kernel, (tuple(out), defaults, frozenset(sig.parameters)))
    return _params_of[id(kernel)][1]


def _spec(v, specialise: bool, align: bool, const: bool = False) -> str:
    """One argument's part of the key, following Triton's rules for non-constexpr arguments."""
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        width = "i32" if -(2**31) <= v < 2**31 else ("u64" if v >= 2**63 else "i64")
        if specialise and v == 1:
            return "=1"
        return width + ("D" if specialise and align and v % 16 == 0 else "")
    if isinstance(v, float):
        return "fp32"
    if hasattr(v, "data_ptr") and hasattr(v, "dtype"):
        dtype = str(v.dtype).replace("torch.", "")
        return f"*{'k' if const else ''}{dtype}" + ("D" if specialise and align and v.data_ptr() % 16 == 0 else "")
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_spec(x, specialise, align) for x in v) + ")"
    shape = getattr(v, "block_shape", None)  # a tensor descriptor: its block shape is compiled in
    return type(v).__name__ + (f"{list(shape)}" if shape is not None else "")


def _constexpr(v) -> str:
    if hasattr(v, "fn") and hasattr(v, "run"):  # a JIT function passed as a constexpr
        return _name(v.fn)
    return repr(getattr(v, "value", v)) if type(v).__name__ == "constexpr" else repr(v)


def describe(kernel, args: tuple, kwargs: dict) -> str:
    """The launch's specialisation in words: name[arg=spec, ...|option=value, ...]."""
    params, defaults, names = _params(kernel)
    if len(args) > len(params):
        raise TypeError(f"{len(args)} arguments for {len(params)} parameters")  # as binding them would
    parts, missing = [], object()
    for i, (name, constexpr, const, specialise, align) in enumerate(params):  # bound as Python binds a call
        v = args[i] if i < len(args) else kwargs.get(name, defaults.get(name, missing))
        if v is missing:
            parts.append(f"{name}=?")
            continue
        parts.append(f"{name}={_constexpr(v) if constexpr else _spec(v, specialise, align, const)}")
    options = [f"{k}={kwargs[k]!r}" for k in sorted(kwargs) if k not in names]
    return f"{_name(kernel.fn)}[{', '.join(parts)}|{', '.join(options)}]"


def key_of(kernel, args: tuple, kwargs: dict) -> str:
    """The variant key of one launch: the kernel's name and a short hash of `describe`."""
    text = describe(kernel, args, kwargs)
    return f"{_name(kernel.fn)}#{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _wrap(cls) -> None:
    run = cls.run
    if getattr(run, "_variant_observer", False):
        return

    def observed(self, *args, grid, warmup, **kwargs):
        try:
            if not getattr(self, "harness", False):  # the harness's own kernels are no implementation's variants
                _keys.setdefault(key_of(self, args, kwargs), None)
        except Exception:  # never let observing break a launch; Triton reports bad arguments itself
            pass
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    observed._variant_observer = True
    cls.run = observed


def install() -> None:
    """Observe every Triton launch in this process (idempotent)."""
    global _installed
    if _installed:
        return
    try:
        from triton.runtime.jit import JITFunction

        _wrap(JITFunction)
    except (ImportError, AttributeError):
        return
    try:
        from triton.runtime.interpreter import InterpretedFunction

        _wrap(InterpretedFunction)
    except (ImportError, AttributeError):
        pass
    try:
        from triton import knobs

        before = knobs.compilation.listener

        def listener(*args, **kw):
            _compiles["loaded" if kw.get("cache_hit") else "compiled"] += 1
            return before(*args, **kw) if before else None

        knobs.compilation.listener = listener
    except (ImportError, AttributeError):  # an older Triton: launches are still observed
        pass
    _installed = True


def compile_only() -> None:
    """In a compile-ahead helper (fuzz.campaign.precompile): every launch of an implementation's Triton kernel
    compiles its variant (into Triton's disk cache, for the worker to load) and is not launched: Triton's own
    warm-up path (`run(..., warmup=True)`). The helper then leaves the GPU's time to the campaign's worker, for
    any implementation; what a wrapper reads back from a kernel that did not run is garbage, which can only make
    the helper compile a variant the worker never meets. The harness's own kernels still run (the case's inputs
    decide what the wrapper launches). Idempotent; MOE_LORA_FUZZ_HELPERS_LAUNCH=1 keeps the launches."""
    if os.environ.get("MOE_LORA_FUZZ_HELPERS_LAUNCH") == "1":
        return
    try:
        from triton.runtime.jit import JITFunction
    except ImportError:
        return
    run = JITFunction.run
    if getattr(run, "_compile_only", False):
        return

    def compiled(self, *args, grid, warmup, **kwargs):
        return run(self, *args, grid=grid, warmup=warmup or not getattr(self, "harness", False), **kwargs)

    compiled._compile_only = True
    JITFunction.run = compiled


def take() -> dict:
    """{"keys": [...], "compiled": n, "loaded": n} since the last take, and reset."""
    out = {"keys": list(_keys), **_compiles}
    _keys.clear()
    _compiles.update(compiled=0, loaded=0)
    return out
