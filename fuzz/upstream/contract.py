"""What each runtime guarantees its kernel, beyond the tensor shapes: the convention's contract.

A rule ties case knobs together the way the runtime always does; each names the upstream lines that show it
(file:function, read from the release; nothing of upstream is copied here). Campaigns draw inside the
contract (`project`, applied by fuzz.targets.impls.ImplProfile.fit) and `--probe-contract` draws just outside it
(`violate`): a kernel that then fails is reported as `unchecked-precondition`, never as a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from moe_lora_fuzz.fuzz.space.case import Case


@dataclass(frozen=True)
class Rule:
    name: str
    guarantee: str
    cite: tuple[str, ...]  # upstream file:function that shows the runtime keeps it
    project: Callable[[Case], Case]  # the nearest case that keeps it
    violate: Callable[[Case], Case | None]  # a case that breaks it (None when it cannot be broken here)


def _layout_of(case: Case) -> str:
    return "per_routed" if case.mul_routed_weight else "per_token"


def _swap_layout(case: Case) -> Case | None:
    if case.top_k == 1:
        return None  # one routed pair per token: both layouts have the same rows
    return case.replace(layout="per_token" if case.mul_routed_weight else "per_routed")


RULES = {
    "layout_follows_mul_routed_weight": Rule(
        "layout_follows_mul_routed_weight",
        "qcurr_hidden_states is per routed pair (M*k rows) exactly when mul_routed_weight is set: the gate_up "
        "projection passes the tokens' hidden states without routed weights, the down projection the routed "
        "intermediate with them; the kernel derives the row of x from mul_routed_weight",
        (
            "vllm/lora/punica_wrapper/punica_gpu.py:PunicaWrapperGPU.add_lora_w13",
            "vllm/lora/punica_wrapper/punica_gpu.py:PunicaWrapperGPU.add_lora_w2",
            "vllm/lora/ops/triton_ops/fused_moe_lora_op.py:_fused_moe_lora_shrink",
        ),
        lambda c: c.replace(layout=_layout_of(c)),
        _swap_layout,
    ),
    "out_is_exactly_the_slices": Rule(
        "out_is_exactly_the_slices",
        "a version without an `offset` parameter writes the whole width of `output` (S*N columns, no offset, no "
        "extra columns) and asserts it",
        ("vllm/lora/ops/triton_ops/fused_moe_lora_op.py:_fused_moe_lora (releases before the offset parameter)",),
        lambda c: c.replace(offset=0, extra_cols=0),
        lambda c: c.replace(extra_cols=max(c.extra_cols, 1)),
    ),
}
# the rules each convention's runtime keeps (SGLang's wrapper reads the layout from x's row count instead:
# sglang/kernels/ops/lora/moe/fused_moe_lora_kernel.py:_fused_moe_lora, so it has no such rule)
CONVENTION_RULES = {"vllm": ("layout_follows_mul_routed_weight",), "sglang": ()}
NO_OFFSET_RULES = ("out_is_exactly_the_slices",)  # added for a version whose wrapper takes no offset


def project(case: Case, names) -> Case:
    for n in names or ():
        case = RULES[n].project(case)
    return case


def violations(case: Case, names) -> list[tuple[str, Case]]:
    out = []
    for n in names or ():
        broken = RULES[n].violate(case)
        if broken is not None:
            out.append((f"contract {n}", broken))
    return out
