"""Small external implementations for the protocol tests: declared precision, declared capabilities.

tf32_declared        rounds fp32 inputs to TF32 before every product and says so (capabilities): clean
tf32_undeclared      the same arithmetic, declaring nothing: a mismatch whose message names TF32
aligned_checked      declares 16-byte alignment and contiguous inputs, and refuses anything else (ValueError)
aligned_unchecked    the same declaration, but reads x as if contiguous without checking: outside its declared
                     space that is a wrong answer, which --probe-contract reports as an unchecked precondition
"""

from __future__ import annotations

import torch
from moe_lora_fuzz.contract import round_to_tf32 as to_tf32

from tests.example_impl import torch_moe_lora


def _tf32_moe_lora(
    *, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout
):
    """Both stages with TF32 inputs: x and A rounded for shrink, B and the intermediate rounded for expand."""
    m, k = topk_ids.shape
    if m == 0:
        return
    rows = x if layout == "per_routed" else x.repeat_interleave(k, dim=0)
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    active = (slot >= 0) & adapter_enabled.bool()[slot.clamp(min=0)]
    n = lora_b[0].shape[2]
    for f in torch.nonzero(active).squeeze(1).tolist():
        lane, e = int(slot[f]), int(expert[f])
        for s in range(len(lora_a)):
            t = to_tf32(lora_a[s][lane, e].float()) @ to_tf32(rows[f].float())
            d = to_tf32(lora_b[s][lane, e].float()) @ to_tf32(t)
            if mul_routed_weight:
                d = d * topk_weights.reshape(-1)[f].float()
            cols = slice(offset + s * n, offset + (s + 1) * n)
            out[f // k, f % k, cols] = (out[f // k, f % k, cols].float() + d).to(out.dtype)


def tf32_declared(**kw):
    _tf32_moe_lora(**kw)


tf32_declared.capabilities = {"fp32_precision": "tf32", "dtypes": ["float32"]}


def tf32_undeclared(**kw):
    _tf32_moe_lora(**kw)


tf32_undeclared.capabilities = {"dtypes": ["float32"]}  # float32 only, precision not declared: IEEE expected

ALIGNED = {"alignment": 16, "strided_inputs": False, "dtypes": ["float32", "float16"]}


def _aligned(t: torch.Tensor) -> bool:
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and all((s * size) % 16 == 0 for s in t.stride()[:-1]) and t.stride(-1) == 1


def aligned_checked(*, out, x, lora_a, lora_b, **kw):
    for name, t in (("x", x), ("out", out), ("lora_a[0]", lora_a[0]), ("lora_b[0]", lora_b[0])):
        if not _aligned(t):
            raise ValueError(f"{name}: base and row strides must be 16-byte aligned (TMA descriptors)")
    torch_moe_lora(out=out, x=x, lora_a=lora_a, lora_b=lora_b, **kw)


aligned_checked.capabilities = ALIGNED


def aligned_unchecked(*, out, x, lora_a, lora_b, **kw):
    dense = torch.as_strided(x, x.shape, (x.shape[1], 1))  # assumes a contiguous x: wrong on a padded view
    torch_moe_lora(out=out, x=dense, lora_a=lora_a, lora_b=lora_b, **kw)


aligned_unchecked.capabilities = ALIGNED
