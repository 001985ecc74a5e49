"""An implementation with two independent bugs, for triage: a campaign must report exactly two root causes.

    python -m fuzz run --impl tests/two_bug_impl.py:two_bugs --device cpu --budget 90

bug 1  with mul_routed_weight the delta is scaled by w**2 (tests/example_impl.py:torch_moe_lora_buggy)
bug 2  the second slice's shrink uses the first slice's lora_a (needs num_slices = 2)
Both give wrong values (mismatch), so only their essential knobs tell them apart.
"""

from __future__ import annotations

from tests.example_impl import torch_moe_lora_buggy


def two_bugs(
    *, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout
) -> None:
    torch_moe_lora_buggy(
        out=out,
        x=x,
        topk_ids=topk_ids,
        topk_weights=topk_weights,
        token_lora=token_lora,
        adapter_enabled=adapter_enabled,
        lora_a=[lora_a[0]] * len(lora_a),
        lora_b=lora_b,
        mul_routed_weight=mul_routed_weight,
        offset=offset,
        layout=layout,
    )
