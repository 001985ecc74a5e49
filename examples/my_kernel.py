"""Your own implementation of the fused MoE LoRA op, in the form moe-lora-fuzz calls it (docs/adapters.md).

    moe-lora-fuzz run --impl examples/my_kernel.py:moe_lora --device cpu --budget 30        # passes
    moe-lora-fuzz run --impl examples/my_kernel.py:moe_lora_buggy --device cpu --budget 30  # a finding

The function is called with keyword arguments only, all tensors on the campaign's device, and must add the op's
delta into `out` in place; every other element of `out` must stay bitwise unchanged. Replace the body with a
call to your kernel (a Triton launch, a torch.ops call, a CUDA extension): the harness does not care how the
delta is computed, only that it is right. This one is plain torch, in fp32, one (slot, expert) group at a time.
"""

from __future__ import annotations

import torch

# What it promises to accept: campaigns draw inside it (docs/adapters.md, "Declared capabilities").
CAPABILITIES = {"dtypes": ("float32", "float16", "bfloat16"), "layouts": ("per_token", "per_routed")}


def _delta(*, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight,
           offset, layout, weight_power):  # fmt: skip
    m, k = topk_ids.shape
    if m == 0:
        return
    rows = x if layout == "per_routed" else x.repeat_interleave(k, dim=0)  # row of pair f = m*k + j
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    active = (slot >= 0) & adapter_enabled.bool()[slot.clamp(min=0)]  # base model (-1), disabled: nothing
    pairs = torch.nonzero(active).squeeze(1)
    num_experts, n = lora_a[0].shape[1], lora_b[0].shape[2]
    group = slot[pairs] * num_experts + expert[pairs]
    weight = topk_weights.reshape(-1).float()
    for g in torch.unique(group).tolist():
        f = pairs[group == g]
        lora, e = divmod(g, num_experts)
        mi, ji = f // k, f % k
        for s in range(len(lora_a)):
            d = (rows[f].float() @ lora_a[s][lora, e].float().T) @ lora_b[s][lora, e].float().T  # shrink, expand
            if mul_routed_weight:
                d = d * weight[f, None] ** weight_power
            cols = slice(offset + s * n, offset + (s + 1) * n)
            out[mi, ji, cols] = (out[mi, ji, cols].float() + d).to(out.dtype)


def moe_lora(**op) -> None:
    """out[m, j, offset + s*N : offset + (s+1)*N] += w * B[s][l, e] @ (A[s][l, e] @ row)."""
    _delta(**op, weight_power=1)


def moe_lora_buggy(**op) -> None:
    """The same with a classic bug: the routed weight applied twice (a pure scale error)."""
    _delta(**op, weight_power=2)


moe_lora.capabilities = CAPABILITIES
moe_lora_buggy.capabilities = CAPABILITIES
