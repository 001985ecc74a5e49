"""Plain-torch implementations of the fused MoE LoRA op, written for the fuzzer's external-impl path.

    python -m fuzz run --impl tests/example_impl.py:torch_moe_lora --device cpu        # passes
    python -m fuzz run --impl tests/example_impl.py:torch_moe_lora_buggy --device cpu  # a finding

torch_moe_lora            the adapter protocol written by hand (SPEC §2), computing in fp32
torch_moe_lora_buggy      the same with one silent bug: the routed weight is applied twice
fused_example             plain-torch shrink + expand behind fuzz.adapters.from_fused (upstream-style fused call)
shrink_expand_example     the same two pieces behind fuzz.adapters.from_shrink_expand
triton_fused_example      a Triton kernel of ours in the upstream fused convention (tests/fakes/moe_lora_core.py)
                          behind from_fused in configuration mode: the case's launch configuration reaches it
triton_fused_example_buggy  the same with the expand split-K grid bug (grid not multiplied by split_k)

Not tuned for speed: these are references for the adapter machinery, small enough to read at a glance.
"""

from __future__ import annotations

import torch
from moe_lora_fuzz.fuzz.adapters import from_fused, from_shrink_expand

from tests.fakes.moe_lora_core import fused_convention


# ---- the adapter protocol, by hand -----------------------------------------------------------------
def _apply(
    out,
    x,
    topk_ids,
    topk_weights,
    token_lora,
    adapter_enabled,
    lora_a,
    lora_b,
    mul_routed_weight,
    offset,
    layout,
    weight_power: int,
) -> None:
    m, k = topk_ids.shape
    if m == 0:
        return
    rows = x if layout == "per_routed" else x.repeat_interleave(k, dim=0)  # (M*k, K): row of pair f = m*k + j
    slot = token_lora.long().repeat_interleave(k)
    expert = topk_ids.reshape(-1).long()
    enabled = adapter_enabled.bool()
    active = (slot >= 0) & enabled[slot.clamp(min=0)]  # base-model (-1) and disabled pairs get nothing
    pairs = torch.nonzero(active).squeeze(1)
    if pairs.numel() == 0:
        return
    num_experts = lora_a[0].shape[1]
    n_dim = lora_b[0].shape[2]
    key = slot[pairs] * num_experts + expert[pairs]
    weight = topk_weights.reshape(-1).float()
    for g in torch.unique(key).tolist():  # one (slot, expert) group at a time: one weight matrix per group
        f = pairs[key == g]
        slot_id, e = divmod(g, num_experts)
        mi, ji = f // k, f % k
        xr = rows[f].float()
        for s in range(len(lora_a)):
            t = xr @ lora_a[s][slot_id, e].float().T  # shrink (R values per pair), fp32
            d = t @ lora_b[s][slot_id, e].float().T  # expand (N values per pair), fp32
            if mul_routed_weight:
                d = d * weight[f, None] ** weight_power
            cols = slice(offset + s * n_dim, offset + (s + 1) * n_dim)
            # only the touched elements are written: every other element of out stays bitwise as it was
            out[mi, ji, cols] = (out[mi, ji, cols].float() + d).to(out.dtype)


def torch_moe_lora(
    *, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout
) -> None:
    """out[m, j, offset + s*N : offset + (s+1)*N] += w? * B[s][l, e] @ (A[s][l, e] @ row), in fp32."""
    _apply(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        mul_routed_weight,
        offset,
        layout,
        weight_power=1,
    )


def torch_moe_lora_buggy(
    *, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout
) -> None:
    """torch_moe_lora with one seeded bug: with mul_routed_weight the delta is scaled by w**2, not w.

    The routed weight applied twice (once after shrink, once after expand) is a pure scale error, so a
    cosine-similarity check misses it; cases without mul_routed_weight are still correct.
    """
    _apply(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        mul_routed_weight,
        offset,
        layout,
        weight_power=2,
    )


# ---- plain-torch pieces in the upstream conventions (consume the align buffers) ----------------------
def _aligned_blocks(
    sorted_token_ids, expert_ids, num_tokens_post_padded, lora_ids, adapter_enabled, num_routed: int, block_size_m: int
):
    """Yield (slot, expert, flat pair indices) for every used block of every enabled slot in lora_ids."""
    enabled = adapter_enabled.bool().tolist()
    ntp = num_tokens_post_padded.tolist()
    for slot_id in lora_ids.tolist():
        if slot_id < 0 or not enabled[slot_id]:
            continue
        used = ntp[slot_id]
        ids = sorted_token_ids[slot_id, :used].long()
        experts = expert_ids[slot_id, : used // block_size_m].tolist()
        for b, e in enumerate(experts):
            if e < 0:
                continue
            f = ids[b * block_size_m : (b + 1) * block_size_m]
            f = f[f < num_routed]  # padding holds the sentinel M*k
            if f.numel():
                yield slot_id, e, f


def torch_shrink(
    intermediate,
    x,
    lora_a_stacked,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    top_k,
    lora_ids,
    adapter_enabled,
    block_size_m,
) -> None:
    """intermediate[s, f] = A[s][l, e] @ x_row(f) (the from_shrink_expand shrink convention)."""
    num_routed = intermediate.shape[1]
    per_routed = x.shape[0] == num_routed
    for slot_id, e, f in _aligned_blocks(
        sorted_token_ids, expert_ids, num_tokens_post_padded, lora_ids, adapter_enabled, num_routed, block_size_m
    ):
        xr = x[f if per_routed else f // top_k].float()
        for s, a in enumerate(lora_a_stacked):
            intermediate[s, f] = (xr @ a[slot_id, e].float().T).to(intermediate.dtype)


def torch_expand(
    y,
    intermediate,
    lora_b_stacked,
    topk_weights,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    top_k,
    lora_ids,
    adapter_enabled,
    block_size_m,
    mul_routed_weight,
    offset,
) -> None:
    """y[m, j, offset + s*N ...] += w? * B[s][l, e] @ intermediate[s, f] (the expand convention)."""
    num_routed = intermediate.shape[1]
    n_dim = lora_b_stacked[0].shape[2]
    weight = topk_weights.reshape(-1).float()
    for slot_id, e, f in _aligned_blocks(
        sorted_token_ids, expert_ids, num_tokens_post_padded, lora_ids, adapter_enabled, num_routed, block_size_m
    ):
        mi, ji = f // top_k, f % top_k
        for s, b in enumerate(lora_b_stacked):
            d = intermediate[s, f].float() @ b[slot_id, e].float().T
            if mul_routed_weight:
                d = d * weight[f, None]
            cols = slice(offset + s * n_dim, offset + (s + 1) * n_dim)
            y[mi, ji, cols] = (y[mi, ji, cols].float() + d).to(y.dtype)


def torch_fused(
    y,
    x,
    lora_a_stacked,
    lora_b_stacked,
    topk_weights,
    sorted_token_ids,
    expert_ids,
    num_tokens_post_padded,
    max_lora_rank,
    top_k,
    lora_ids,
    adapter_enabled,
    block_size_m,
    mul_routed_weight,
    offset,
) -> None:
    """The from_fused convention: shrink into a private fp32 intermediate, then expand into y."""
    num_routed = topk_weights.shape[0] * top_k
    intermediate = torch.zeros((len(lora_a_stacked), num_routed, max_lora_rank), dtype=torch.float32, device=y.device)
    torch_shrink(
        intermediate,
        x,
        lora_a_stacked,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        top_k,
        lora_ids,
        adapter_enabled,
        block_size_m,
    )
    torch_expand(
        y,
        intermediate,
        lora_b_stacked,
        topk_weights,
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded,
        top_k,
        lora_ids,
        adapter_enabled,
        block_size_m,
        mul_routed_weight,
        offset,
    )


# ---- the same pieces behind the adapters: two lines each -------------------------------------------
fused_example = from_fused(torch_fused, block_size_m=16)
shrink_expand_example = from_shrink_expand(torch_shrink, torch_expand, block_size_m=32)

# ---- a Triton kernel in the upstream fused convention, launch configuration forwarded per case ---------
triton_fused_example = from_fused(
    fused_convention(expand_grid_covers_split_k=True), capabilities={"fp32_precision": "ieee"}
)
triton_fused_example_buggy = from_fused(
    fused_convention(expand_grid_covers_split_k=False), capabilities={"fp32_precision": "ieee"}
)
