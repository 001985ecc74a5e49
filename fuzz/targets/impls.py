"""Resolve an implementation name to an `Impl`: a callable that applies the op to a Tensors object in place,
plus what the fuzzer must know of it (does it take a launch configuration, what does it declare).

    ours                   our kernels (kernels.fused_moe_lora) with the case's config and workspace
    ours-quant             the same on quantized cases only (it declares fp8/int8 quantization; docs/quantization.md)
    ours-quant:SCHEME      ... of one scheme: fp8_w8a8, int8_w8a8 or int8_w8a16
    mutant:<id>            our kernels with one seeded bug (kernels.MUTANTS)
    module:function        an external implementation (adapter protocol below)
    path/to/file.py:function
    sglang | vllm          the installed framework's fused MoE LoRA kernel (fuzz.upstream, docs/upstream.md)
    sglang==V | vllm==V    a released version's kernel, fetched from the package index into a cache
    sglang:FILE | vllm:FILE  a kernel file from a branch, the rest of the framework stood in for

Adapter protocol: the function is called with keyword arguments only, named as in SPEC §2 (contract.OP_ARGS):
    out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b,
    mul_routed_weight, offset, layout
plus `config=` (a contract.LaunchConfig: block_m, shrink and expand tiles) when its signature has a `config`
parameter; all tensors on the campaign's device. It must add the op's delta into `out` in place. It may carry
`capabilities` (fuzz.space.capabilities) and `settings` (a dict recorded in repro files). Anything it raises on a
case is a finding of kind "exception"; a process crash is a finding of kind "crash".
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from moe_lora_fuzz.contract import OP_ARGS, MoeLoraConfig
from moe_lora_fuzz.fuzz import upstream
from moe_lora_fuzz.fuzz.data.tensors import Tensors
from moe_lora_fuzz.fuzz.space.capabilities import Capabilities, CapabilityError
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.targets.impl_error import ImplError
from moe_lora_fuzz.kernels import MUTANTS, NO_DEVIATION, Workspace, fused_moe_lora
from moe_lora_fuzz.kernels.mutants import QUANT_ALL

ADAPTER_ARGS = OP_ARGS


@dataclass(frozen=True)
class ImplProfile:
    """What the case space follows of an implementation; picklable, so the worker that loaded the
    implementation can hand it to the campaign (which never imports the implementation itself)."""

    takes_config: bool = False  # receives the case's launch configuration
    ours: bool = False  # our kernels: also takes the fuzzer's workspace (align buffers, intermediate)
    capabilities: Capabilities = field(default_factory=Capabilities)
    settings: dict = field(default_factory=dict)

    def fit(self, case: Case) -> Case:
        """The case as this implementation can take it: knobs it never sees at their neutral value (they are
        then neither varied, nor part of its signatures, nor minimised), the rest inside its declared space."""
        if not self.ours:
            case = case.replace(align_slack=0)
            if not self.takes_config:
                case = case.replace(config=MoeLoraConfig())
            else:
                case = case.replace(config=case.config.with_knob("align", "auto"))
        case = _across_switches(case, self.settings.get("switches"))
        return self.capabilities.project(upstream.contract.project(case, self.settings.get("contract")))

    def violate(self, case: Case) -> tuple[str, Case] | None:
        """--probe-contract: one declared capability or runtime-contract rule broken, chosen by the seed."""
        import random

        fitted = self.fit(case)
        options = self.capabilities.violations(fitted)
        options += upstream.contract.violations(fitted, self.settings.get("contract"))
        if not options:
            return None
        return options[random.Random(case.seed ^ 0x0B5).randrange(len(options))]


def _across_switches(case: Case, switches: dict | None) -> Case:
    """One case in eight per switch kind moved next to a size switch of an upstream wrapper
    (fuzz.upstream.trace.switches): M at the switch or one past it, the rank at it, one past it or up to twice
    it (256 for vLLM's 128), or M small enough for the runtime's naive block assignment, so both sides run.
    Rank switches only where kernels compile (under Triton's interpreter a rank past 128 costs minutes)."""
    if not switches:
        return case
    if case.offset or case.extra_cols:  # a column offset means a fully sharded call (fuzz.upstream.conventions)
        moved = _across_switches(case.replace(offset=0, extra_cols=0), switches)
        return case if moved.replace(offset=case.offset, extra_cols=case.extra_cols) == case else moved
    import os

    h = (case.seed * 0x9E3779B97F4A7C15) & (2**64 - 1)  # case seeds are small consecutive ints: mix them
    pick, side, which = (h >> 40) % 8, (h >> 44) % 2, h >> 45
    if pick == 1 and switches.get("m"):
        return case.replace(m=switches["m"][which % len(switches["m"])] + side)
    if pick == 2 and switches.get("rank") and os.environ.get("TRITON_INTERPRET") != "1":
        t = switches["rank"][which % len(switches["rank"])]
        r = t + (which >> 3) % 2 if side == 0 else t + 1 + (which >> 3) % t  # at/just past it, or up to 2x
        return case.replace(rank=r, real_rank=min(case.real_rank, r))
    if pick == 3 and switches.get("naive"):  # few routed pairs: the runtime passes no align buffers
        sparsity = switches["naive"][0]
        if switches.get("m") and side:  # above the token switch: as many experts as naive needs there
            m = switches["m"][0] + 1
            experts = max(case.num_experts, -(-sparsity * m // case.num_slots))
            r = min(case.rank, 1 + which % 16)  # small ranks too: the small-batch limits
            return case.replace(m=m, top_k=1, num_experts=experts, rank=r, real_rank=min(case.real_rank, r))
        m = case.num_experts * case.num_slots // (sparsity * case.top_k)
        return case.replace(m=m) if m >= 1 else case
    return case


@dataclass
class Impl:
    """An implementation as the fuzzer drives it."""

    name: str
    run: Callable[[Tensors], None]
    takes_config: bool = False
    ours: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)
    settings: dict = field(default_factory=dict)
    trace: Callable[[], list] | None = None  # features of the last call (fuzz.upstream.trace), when it has one

    def __call__(self, t: Tensors) -> None:
        self.run(t)

    def profile(self) -> ImplProfile:
        return ImplProfile(self.takes_config, self.ours, self.capabilities, dict(self.settings))

    def fit(self, case: Case) -> Case:
        return self.profile().fit(case)


def _ours(name: str, deviation, capabilities: dict | None = None) -> Impl:
    def run(t: Tensors) -> None:
        fused_moe_lora(
            **t.op_kwargs(),
            config=t.case.config,
            workspace=Workspace(intermediate=t.intermediate, align=t.align),
            deviation=deviation,
        )

    return Impl(name, run, takes_config=True, ours=True, capabilities=Capabilities.parse(capabilities))


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
    except BaseException as e:  # any import-time failure (SystemExit included) is a usage error, in one line
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ImplError(f"--impl {spec!r}: cannot import {target}: {type(e).__name__}: {e}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ImplError(f"--impl {spec!r}: {target} has no callable {func!r}")
    return fn


def _takes_config(spec: str, fn: Callable) -> bool:
    """Whether fn takes the adapter keywords, and `config` too; ImplError if it cannot take the keywords."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False  # builtins without a signature: trust them, without a config
    params = sig.parameters
    named_config = "config" in params and params["config"].kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    try:
        sig.bind(**{a: None for a in OP_ARGS}, **({"config": None} if named_config else {}))
    except TypeError as e:
        raise ImplError(
            f"--impl {spec!r}: signature does not accept the adapter keywords ({', '.join(OP_ARGS)}): {e}"
        ) from None
    return named_config


def wrap(spec: str, fn: Callable) -> Impl:
    """An external adapter-protocol function as an Impl (capabilities and settings read from it)."""
    takes_config = _takes_config(spec, fn)
    try:
        caps = Capabilities.parse(getattr(fn, "capabilities", None), f"--impl {spec!r}: capabilities")
    except CapabilityError as e:
        raise ImplError(str(e)) from None
    settings = getattr(fn, "settings", None)
    settings = dict(settings) if isinstance(settings, dict) else {}

    def run(t: Tensors) -> None:
        if takes_config:
            fn(**t.op_kwargs(), config=t.case.config)
        else:
            fn(**t.op_kwargs())

    trace = getattr(fn, "trace", None)
    return Impl(
        spec,
        run,
        takes_config=takes_config,
        capabilities=caps,
        settings=settings,
        trace=trace if callable(trace) else None,
    )


def resolve(name: str) -> Impl:
    if name == "ours":
        return _ours(name, NO_DEVIATION)
    if name == "ours-quant":  # our kernels on quantized cases only (kernels/moe_lora_quant.py)
        return _ours(name, NO_DEVIATION, QUANT_ALL)
    if name.startswith("ours-quant:"):  # ... of one scheme
        scheme = name.split(":", 1)[1]
        if scheme not in QUANT_ALL["quant"]:
            raise ImplError(f"--impl {name!r}: unknown scheme; known: {', '.join(QUANT_ALL['quant'])}")
        return _ours(name, NO_DEVIATION, {"quant": [scheme]})
    if name.startswith("mutant:"):
        mid = name.split(":", 1)[1]
        if mid not in MUTANTS:
            raise ImplError(f"--impl {name!r}: unknown mutant; known: {', '.join(MUTANTS)}")
        return _ours(name, MUTANTS[mid].deviation, MUTANTS[mid].capabilities)
    return wrap(name, upstream.load(name) if upstream.is_upstream(name) else _load_external(name))


def is_ours(name: str) -> bool:
    """Our kernels accept the fuzzer's workspace and config; external ones may not."""
    return name in ("ours", "ours-quant") or name.startswith(("mutant:", "ours-quant:"))


def names() -> list[str]:
    return ["ours", "ours-quant"] + [f"mutant:{m}" for m in MUTANTS]
