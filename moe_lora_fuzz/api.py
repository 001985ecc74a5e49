"""The public Python API (documented in docs/api.md): judge one case of the fused MoE LoRA op, the way
`torch.testing.assert_close` judges one pair of tensors.

    from moe_lora_fuzz import Case, judge
    verdict = judge(Case(m=7, top_k=2, num_experts=4, num_slots=2, rank=8, real_rank=8, k_dim=64, n_dim=48),
                    my_impl, device="cpu")
    assert verdict.kind == "pass", verdict.message

Everything here is a thin, stable name over the harness's modules (fuzz.space.case, fuzz.judgement.oracle,
fuzz.adapters, fuzz.upstream, fuzz.space.capabilities); those modules may move, these names do not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Union

from moe_lora_fuzz.device import use_device
from moe_lora_fuzz.fuzz.judgement.verdict import KINDS, Verdict
from moe_lora_fuzz.fuzz.space.capabilities import Capabilities, CapabilityError
from moe_lora_fuzz.fuzz.space.case import Case

if TYPE_CHECKING:  # for type checkers; at run time these come on first use (below)
    from moe_lora_fuzz.fuzz.adapters import CAPABILITY_KEYS, from_fused, from_shrink_expand
    from moe_lora_fuzz.fuzz.upstream import load_file

# Names whose modules import triton.language (our kernels, the upstream stand-ins): imported on first use, so that
# `from moe_lora_fuzz import Case, judge` leaves `judge(..., device="cpu")` free to choose the interpreter on a
# machine with a GPU (moe_lora_fuzz.device). Call use_device("cpu") before these when you want the interpreter.
_ON_FIRST_USE = {
    "CAPABILITY_KEYS": "moe_lora_fuzz.fuzz.adapters",
    "from_fused": "moe_lora_fuzz.fuzz.adapters",
    "from_shrink_expand": "moe_lora_fuzz.fuzz.adapters",
    "load_file": "moe_lora_fuzz.fuzz.upstream",
}

__all__ = [
    "CAPABILITY_KEYS",
    "Capabilities",
    "CapabilityError",
    "Case",
    "KINDS",
    "Verdict",
    "from_fused",
    "from_shrink_expand",
    "judge",
    "load_file",
    "use_device",
]

Implementation = Union[str, Callable[..., None]]


def judge(case: Case, impl: Implementation = "ours", device: str = "auto", *, metamorphic: bool = False) -> Verdict:
    """Run `impl` on `case` and judge its output against the fp64 reference with the error bound (docs/oracle.md).

    impl: a name as on the command line ("ours", "mutant:<id>", "module:function", "path/to/file.py:function",
    "sglang", "vllm:path/to/file.py") or a callable following the adapter protocol (docs/adapters.md): keyword
    arguments named as the op's, adds the delta into `out` in place, may carry `capabilities` and `settings`.
    metamorphic: also run the configuration twin (another launch configuration must agree).
    Never raises for a failure of the implementation: the Verdict says what happened (`verdict.failed`,
    `verdict.kind`, `verdict.message`, `verdict.worst`). Raises ValueError for an invalid case or device, and
    moe_lora_fuzz.fuzz.targets.impls.ImplError for a name that cannot be loaded or a callable that cannot take the
    op's keyword arguments."""
    device = use_device(device)  # before anything imports triton.language
    from moe_lora_fuzz.fuzz.judgement.oracle import check
    from moe_lora_fuzz.fuzz.targets.impls import resolve, wrap

    case.validate(interpreter=device == "cpu")
    if isinstance(impl, str):
        name, resolved = impl, resolve(impl)
    elif callable(impl):
        name = getattr(impl, "__qualname__", None) or type(impl).__name__
        resolved = wrap(name, impl)
    else:
        raise TypeError(f"impl: expected a name or a callable (got {type(impl).__name__})")
    return check(case, name, device, impl=resolved, metamorphic=metamorphic)


def __getattr__(name: str):
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
